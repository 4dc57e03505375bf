"""Experiment grids and remote training on Ray: one detector per combination of settings.

A sweep trains and evaluates a detector for every combination of categories × backbones ×
subnet variants × steps × image sizes × seeds (the paper's Tables 2–4 are such grids). Each
combination is one Ray task — on a local Ray started for the sweep, or on a cluster joined by
address — or, with ``use_ray=False``, runs in this process. As each trial finishes, its
checkpoint and one row of ``results.csv`` are written atomically; a rerun with the same
arguments skips the trials already in the file, so a sweep resumes after a crash or Ctrl-C::

    grid = SweepGrid(categories=("bottle",), variants=("CA", "AC", "CAC", "CC"), steps=(1, 2, 3))
    summary = run_sweep(grid, "runs/table2", data_root="mvtec_ad")
    print(summary.table)

Modules, one concern each: :mod:`.grid` (axes and trials), :mod:`.trial` (one trial in this
process), :mod:`.results` (``results.csv``), :mod:`.table` (the paper-format table),
:mod:`.ray_backend` (connecting to Ray, trials as tasks), :mod:`.remote` (one training on a
cluster with its progress streamed back: the app's "run on a Ray cluster"), :mod:`.runner`
(the sweep itself). The ``sweep`` command line is in :mod:`cainnflow.cli`.

Ray is an optional extra (``pip install 'cainnflow[ray]'``) imported only when used. Sweep
trials read ``data_root`` on the worker (a path every node can see); :func:`train_remote`
ships the training images with the task.
"""

from .grid import SweepGrid, Trial
from .ray_backend import RAY_INSTALL_HINT, RayUnavailableError, connect_ray, disconnect_ray
from .remote import train_remote
from .results import (
    CHECKPOINT_DIR,
    RESULT_COLUMNS,
    RESULTS_FILE,
    TrialResult,
    parse_results,
    read_results,
    results_csv,
)
from .runner import SweepProgress, SweepSummary, run_sweep
from .table import TABLE_FILE, paper_table
from .trial import TrialFailure, TrialOutcome, run_trial

__all__ = [
    "CHECKPOINT_DIR",
    "RAY_INSTALL_HINT",
    "RESULTS_FILE",
    "RESULT_COLUMNS",
    "TABLE_FILE",
    "RayUnavailableError",
    "SweepGrid",
    "SweepProgress",
    "SweepSummary",
    "Trial",
    "TrialFailure",
    "TrialOutcome",
    "TrialResult",
    "connect_ray",
    "disconnect_ray",
    "paper_table",
    "parse_results",
    "read_results",
    "results_csv",
    "run_sweep",
    "run_trial",
    "train_remote",
]
