"""Running a sweep: every trial of a grid not yet in ``results.csv``, serially or on Ray, resumable.

Sweeps that share an output folder (two commands, two machines on one share) merge their rows:
``results.csv``, ``table.md`` and the checkpoints are read and written under an exclusive
``fcntl.flock`` on ``OUT/.sweep.lock``, each new row added to what is in the file at that
moment. A trial another sweep recorded first keeps that sweep's row and checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..checkpoint import write_bytes_atomically
from ..data import load_mvtec_category
from ..errors import CainnflowError, DataError
from .grid import SweepGrid, Trial
from .ray_backend import run_trials_on_ray
from .results import CHECKPOINT_DIR, RESULTS_FILE, TrialResult, read_results, results_csv
from .table import TABLE_FILE, paper_table
from .trial import TrialFailure, TrialOutcome, failure, run_trial

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so sweeps sharing a folder are not merged there
    fcntl = None  # type: ignore[assignment]

__all__ = ["SweepProgress", "SweepSummary", "run_sweep"]

CHECKPOINT_SUFFIX = ".safetensors"
LOCK_FILE = ".sweep.lock"


@dataclass(frozen=True)
class SweepProgress:
    """One report of a running sweep.

    Attributes:
        done, total: finished trials (those skipped as already finished included) and the grid size.
        trial: the trial this report is about (None for the opening report).
        result: its recorded row (None if it failed or for the opening report).
        error: why it failed.
        skipped: trials found finished in ``results.csv`` before this run.
    """

    done: int
    total: int
    trial: Trial | None = None
    result: TrialResult | None = None
    error: str | None = None
    skipped: int = 0


@dataclass
class SweepSummary:
    """What a call of :func:`run_sweep` did."""

    total: int
    skipped: int
    ran: int
    failed: list[TrialFailure]
    seconds: float
    results_path: Path
    table_path: Path
    table: str
    results: list[TrialResult] = field(default_factory=list)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Holds the output folder's lock (waits for another sweep's write to end)."""
    with (out / LOCK_FILE).open("a") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_table(out: Path, results: list[TrialResult]) -> str:
    table = paper_table(results)
    write_bytes_atomically(out / TABLE_FILE, table.encode("utf-8"))
    return table


def _record(out: Path, trial: Trial, outcome: TrialOutcome) -> TrialResult:
    """Adds the trial's checkpoint and row to what ``out`` holds now (under the lock, each atomically).

    Returns:
        The trial's row; another sweep's when that one recorded the same trial first.
    """
    with _locked(out):
        results = read_results(out / RESULTS_FILE)
        earlier = next((r for r in results if r.trial.key == trial.key), None)
        if earlier is not None:
            return earlier
        relative = f"{CHECKPOINT_DIR}/{trial.key}{CHECKPOINT_SUFFIX}"
        write_bytes_atomically(out / relative, outcome.checkpoint)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        result = replace(outcome.result, checkpoint=relative, finished_at=now)
        results.append(result)
        write_bytes_atomically(out / RESULTS_FILE, results_csv(results))
        _write_table(out, results)
    return result


def run_sweep(
    grid: SweepGrid,
    out_dir: str | Path,
    data_root: str | Path,
    *,
    use_ray: bool = True,
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    device: str = "auto",
    on_progress: Callable[[SweepProgress], None] | None = None,
) -> SweepSummary:
    """Runs every trial of ``grid`` not yet in ``out_dir/results.csv``.

    Args:
        grid: the settings to combine.
        out_dir: where ``results.csv``, ``table.md`` and ``checkpoints/`` go.
        data_root: MVTec-layout root; with a cluster, a path every worker can read.
        use_ray: one Ray task per trial; False runs the trials one after the other here.
        address: a Ray cluster to join (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``);
            None starts a local Ray with all this machine's cores, stopped at the end.
        cpus_per_trial, gpus_per_trial: Ray resources of one trial (CPU threads of its torch).
        device: device of each trial, resolved on its worker.
        on_progress: called once at the start and once per finished or failed trial.

    Raises:
        CainnflowError: bad grid, data root or results file; Ray missing or unreachable.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    root = Path(data_root).expanduser()
    root_text = str(root.resolve()) if root.exists() else str(root)
    trials = grid.trials()
    if root.exists():
        for category in grid.categories:
            load_mvtec_category(root, category)  # fail fast with the loader's clear message
    elif address is None:
        raise DataError(f"data root {root} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        results = read_results(out / RESULTS_FILE)
    others = sorted({r.data_root for r in results if r.data_root != root_text})
    if others:
        raise CainnflowError(
            f"{out / RESULTS_FILE} holds trials on another data root ({others[0]}); use another --out"
        )
    finished = {r.trial.key for r in results}
    pending = [t for t in trials if t.key not in finished]
    skipped = len(trials) - len(pending)
    report = on_progress or (lambda _p: None)
    report(SweepProgress(skipped, len(trials), skipped=skipped))
    failed: list[TrialFailure] = []
    done = skipped

    def finish(trial: Trial, outcome: TrialOutcome | TrialFailure) -> None:
        nonlocal done
        done += 1
        if isinstance(outcome, TrialFailure):
            failed.append(outcome)
            report(SweepProgress(done, len(trials), trial, error=outcome.error, skipped=skipped))
        else:
            result = _record(out, trial, outcome)
            report(SweepProgress(done, len(trials), trial, result=result, skipped=skipped))

    try:
        if pending and use_ray:
            run_trials_on_ray(pending, root_text, address, cpus_per_trial, gpus_per_trial, device, finish)
        else:
            for trial in pending:
                try:
                    outcome: TrialOutcome | TrialFailure = run_trial(trial, root_text, device=device)
                except CainnflowError as exc:
                    outcome = failure(trial, exc)
                finish(trial, outcome)
    finally:
        with _locked(out):
            results = read_results(out / RESULTS_FILE)
            table = _write_table(out, results)
    return SweepSummary(
        total=len(trials),
        skipped=skipped,
        ran=len(pending) - len(failed),
        failed=failed,
        seconds=time.perf_counter() - start,
        results_path=out / RESULTS_FILE,
        table_path=out / TABLE_FILE,
        table=table,
        results=results,
    )
