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

:func:`train_remote` runs one training as a Ray task on a cluster, streams its
:class:`~cainnflow.training.TrainProgress` back through a small actor and returns the trained
detector's checkpoint bytes (the app's "run on a Ray cluster"). Ray is an optional extra
(``pip install 'cainnflow[ray]'``) imported only when used. On a cluster, every node needs
this project's dependencies (torch, timm, FrEIA, …); the ``cainnflow`` package itself is
shipped with the job. Sweep trials read ``data_root`` on the worker (a path every node can
see); :func:`train_remote` ships the training images with the task.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from threading import Event
from types import ModuleType
from typing import Any

import torch

from . import errors
from .checkpoint import write_bytes_atomically
from .data import GOOD_LABEL, GOOD_TYPE, CategoryData, Sample, load_mvtec_category
from .detector import Detector
from .device import DEVICE_CHOICES
from .errors import CainnflowError, DataError, TrainingCancelled
from .metrics import format_metric
from .model import CAINNFlowConfig
from .subnet import VARIANTS
from .training import ProgressCallback, TrainConfig, TrainProgress

try:
    from .registry import BACKBONES, DEFAULT_BACKBONE
except ImportError:  # before the backbone registry moved to its own module
    from .backbone import BACKBONES, DEFAULT_BACKBONE

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
    "TrialOutcome",
    "TrialResult",
    "add_sweep_parser",
    "paper_table",
    "read_results",
    "run_sweep",
    "run_sweep_command",
    "run_trial",
    "train_remote",
]

RESULTS_FILE = "results.csv"
TABLE_FILE = "table.md"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".safetensors"
RAY_INSTALL_HINT = "pip install 'cainnflow[ray]' (or: pip install ray)"
KEY_LENGTH = 16  # hex digits of the trial key
PROGRESS_INTERVAL_S = 0.25  # the remote trainer pushes at most this often (plus phase/epoch ends)
POLL_INTERVAL_S = 0.2  # the caller of train_remote polls the progress board this often
WAIT_TIMEOUT_S = 1.0  # the sweep's driver wakes up this often while trials run
CANCEL_POLL_S = 0.3  # the remote trainer checks for a cancel request this often
CANCEL_GRACE_S = 15.0  # after a cancel, wait this long for the remote trainer to stop by itself
EXIT_TRIALS_FAILED = 2
PERCENT = 100.0
MISSING = "—"


class RayUnavailableError(CainnflowError):
    """Ray is not installed, or the cluster cannot be reached or cannot run the request."""


# --------------------------------------------------------------------------- grid and trials


@dataclass(frozen=True)
class Trial:
    """The settings of one training + evaluation; its :attr:`key` identifies it in results.

    ``image_size`` is resolved (never None): the backbone's default when the grid left it open.
    ``epochs`` None trains for the library's default step budget (:class:`TrainConfig`).
    """

    category: str
    backbone: str
    variant: str
    steps: int
    image_size: int
    seed: int
    epochs: int | None
    lr: float
    batch_size: int
    weights: str

    @property
    def key(self) -> str:
        """A stable hash of every setting (the same settings always give the same key)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:KEY_LENGTH]

    @property
    def label(self) -> str:
        return (
            f"{self.category} {self.backbone} {self.variant} steps {self.steps} {self.image_size}px "
            f"seed {self.seed}"
        )

    def model_config(self) -> CAINNFlowConfig:
        return CAINNFlowConfig(
            backbone=self.backbone,
            image_size=self.image_size,
            variant=self.variant,
            steps=self.steps,
            seed=self.seed,
        )

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, seed=self.seed)


@dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep; every combination is one :class:`Trial`.

    Attributes:
        categories: category folders under the data root.
        backbones, variants, steps, seeds: values per axis.
        image_sizes: input sizes; None stands for each backbone's default size.
        epochs, lr, batch_size: optimisation settings shared by all trials (None: the library's).
        weights: backbone weights: ``"auto"``, ``"random"`` (tests only) or a file every worker
            can read.
    """

    categories: tuple[str, ...]
    backbones: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    steps: tuple[int, ...] = ()
    image_sizes: tuple[int | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    weights: str = "auto"

    def trials(self) -> list[Trial]:
        """Every combination, in grid order, without duplicates.

        Raises:
            CainnflowError: an unknown backbone or variant, or settings the model refuses.
        """
        if not self.categories:
            raise CainnflowError("a sweep needs at least one category")
        backbones = self.backbones or (DEFAULT_BACKBONE,)
        variants = self.variants or (CAINNFlowConfig.variant,)
        for name in backbones:
            if name not in BACKBONES:
                raise CainnflowError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
        for variant in variants:
            if variant not in VARIANTS:
                raise CainnflowError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        defaults = TrainConfig()
        epochs = defaults.epochs if self.epochs is None else self.epochs
        if epochs is not None and epochs < 1:
            raise CainnflowError(f"epochs must be at least 1, got {epochs}")
        trials: list[Trial] = []
        axes = itertools.product(
            self.categories,
            backbones,
            variants,
            self.steps or (CAINNFlowConfig.steps,),
            self.image_sizes or (None,),
            self.seeds or (0,),
        )
        for category, backbone, variant, steps, size, seed in axes:
            trial = Trial(
                category=category,
                backbone=backbone,
                variant=variant,
                steps=int(steps),
                image_size=int(size) if size is not None else BACKBONES[backbone].default_image_size,
                seed=int(seed),
                epochs=None if epochs is None else int(epochs),
                lr=float(defaults.lr if self.lr is None else self.lr),
                batch_size=int(defaults.batch_size if self.batch_size is None else self.batch_size),
                weights=str(self.weights),
            )
            try:
                trial.model_config()
            except ValueError as exc:
                raise CainnflowError(f"invalid settings for {trial.label}: {exc}") from exc
            if trial not in trials:
                trials.append(trial)
        return trials


@dataclass(frozen=True)
class TrialResult:
    """One row of ``results.csv``: a trial's settings, metrics and where its checkpoint is.

    Attributes:
        trial: the settings.
        image_auroc, pixel_auroc, aupro: test metrics in [0, 1] (None when unavailable).
        train_s: seconds of feature caching plus flow training.
        ms_per_image: scoring time per test image (backbone + flows), on the trial's device.
        device: the device the trial ran on.
        host: the machine the trial ran on.
        checkpoint: the checkpoint file, relative to the folder of ``results.csv``.
        data_root: the dataset root the trial read.
        finished_at: UTC time the row was written (ISO 8601).
    """

    trial: Trial
    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    train_s: float
    ms_per_image: float | None
    device: str
    host: str
    checkpoint: str
    data_root: str
    finished_at: str = ""

    def to_row(self) -> dict[str, str]:
        values: dict[str, Any] = {"key": self.trial.key, **asdict(self.trial)}
        for f in fields(self):
            if f.name != "trial":
                values[f.name] = getattr(self, f.name)
        return {column: _csv_text(values[column]) for column in RESULT_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> TrialResult:
        try:
            trial = Trial(
                category=row["category"],
                backbone=row["backbone"],
                variant=row["variant"],
                steps=int(row["steps"]),
                image_size=int(row["image_size"]),
                seed=int(row["seed"]),
                epochs=None if row["epochs"] == "" else int(row["epochs"]),
                lr=float(row["lr"]),
                batch_size=int(row["batch_size"]),
                weights=row["weights"],
            )
            return cls(
                trial=trial,
                image_auroc=_optional_float(row["image_auroc"]),
                pixel_auroc=_optional_float(row["pixel_auroc"]),
                aupro=_optional_float(row["aupro"]),
                train_s=float(row["train_s"]),
                ms_per_image=_optional_float(row["ms_per_image"]),
                device=row["device"],
                host=row["host"],
                checkpoint=row["checkpoint"],
                data_root=row["data_root"],
                finished_at=row["finished_at"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a row of a cainnflow sweep: {exc}") from exc


RESULT_COLUMNS: tuple[str, ...] = (
    "key",
    "category",
    "backbone",
    "variant",
    "steps",
    "image_size",
    "seed",
    "epochs",
    "lr",
    "batch_size",
    "weights",
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "train_s",
    "ms_per_image",
    "device",
    "host",
    "checkpoint",
    "data_root",
    "finished_at",
)


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _optional_float(text: str) -> float | None:
    return None if text == "" else float(text)


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial sends back to the process that records it (metrics as in :class:`TrialResult`)."""

    image_auroc: float | None
    pixel_auroc: float | None
    aupro: float | None
    train_s: float
    ms_per_image: float | None
    device: str
    host: str
    checkpoint: bytes


def run_trial(
    trial: Trial, data_root: str | Path, *, device: str = "auto", threads: int | None = None
) -> TrialOutcome:
    """Trains and evaluates one trial in this process.

    Args:
        trial: the settings.
        data_root: MVTec-layout root holding ``trial.category``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        threads: torch CPU threads (None: leave as is).

    Raises:
        CainnflowError: bad data, unavailable weights, or training that cannot go on.
    """
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    data = load_mvtec_category(data_root, trial.category)
    detector = Detector.create(trial.model_config(), weights=trial.weights, device=device)
    history = detector.fit(data, trial.train_config())
    detector.info["sweep_key"] = trial.key
    image = pixel = pro = ms = None
    if data.has_test:
        result = detector.evaluate(data)
        image, pixel, pro, ms = result.image_auroc, result.pixel_auroc, result.aupro, result.ms_per_image
    return TrialOutcome(
        image_auroc=image,
        pixel_auroc=pixel,
        aupro=pro,
        train_s=history.feature_seconds + history.train_seconds,
        ms_per_image=ms,
        device=str(detector.device),
        host=socket.gethostname(),
        checkpoint=detector.to_bytes(),
    )


def _trial_task(trial: Trial, data_root: str, device: str, threads: int) -> TrialOutcome | str:
    """The Ray task body: an outcome, or the one-line message of a CainnflowError."""
    try:
        return run_trial(trial, data_root, device=device, threads=threads)
    except CainnflowError as exc:
        return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- results on disk


def read_results(path: str | Path) -> list[TrialResult]:
    """The rows of a ``results.csv`` written by :func:`run_sweep` (empty if the file is missing).

    Raises:
        DataError: the file is not a sweep's results table.
    """
    path = Path(path)
    if not path.exists():
        return []
    return parse_results(path.read_text(encoding="utf-8"), name=path.name)


def parse_results(text: str, *, name: str = RESULTS_FILE) -> list[TrialResult]:
    """Parses the text of a ``results.csv``.

    Raises:
        DataError: missing columns or unreadable rows (the message names the line).
    """
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in RESULT_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"{name} is not a cainnflow sweep's results table: missing {', '.join(missing)}")
    results = []
    for line, row in enumerate(reader, start=2):
        try:
            results.append(TrialResult.from_row(row))
        except DataError as exc:
            raise DataError(f"{name}, line {line}: {exc}") from exc
    return results


def _results_csv(results: Iterable[TrialResult]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result.to_row())
    return buffer.getvalue().encode("utf-8")


def _record(
    out: Path, trial: Trial, outcome: TrialOutcome, data_root: str, results: list[TrialResult]
) -> TrialResult:
    """Writes the checkpoint, then the results table with the new row (each atomically)."""
    relative = f"{CHECKPOINT_DIR}/{trial.key}{CHECKPOINT_SUFFIX}"
    write_bytes_atomically(out / relative, outcome.checkpoint)
    result = TrialResult(
        trial=trial,
        image_auroc=outcome.image_auroc,
        pixel_auroc=outcome.pixel_auroc,
        aupro=outcome.aupro,
        train_s=outcome.train_s,
        ms_per_image=outcome.ms_per_image,
        device=outcome.device,
        host=outcome.host,
        checkpoint=relative,
        data_root=data_root,
        finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    results.append(result)
    write_bytes_atomically(out / RESULTS_FILE, _results_csv(results))
    return result


# --------------------------------------------------------------------------- the paper-format table


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and math.isfinite(v)]
    return sum(present) / len(present) if present else None


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value * PERCENT:.2f}"


_CONFIG_FIELDS = ("backbone", "variant", "steps", "image_size", "epochs", "lr", "batch_size", "weights")


def _setting_label(name: str, value: Any) -> str:
    if name == "epochs":
        return "step budget" if value is None else f"{value} ep"
    if name == "steps":
        return f"steps {value}"
    if name == "image_size":
        return f"{value}px"
    if name in ("backbone", "variant"):
        return str(value)
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def paper_table(results: Sequence[TrialResult]) -> str:
    """A Markdown table in the paper's format: one row per category, a mean row.

    One column per setting combination (named by the settings that differ; the shared ones
    are listed under the table); each cell is ``image / pixel AUROC`` in %, averaged over seeds.
    """
    if not results:
        return "(no finished trials)\n"
    configs: list[tuple[Any, ...]] = []
    for r in results:
        config = tuple(getattr(r.trial, f) for f in _CONFIG_FIELDS)
        if config not in configs:
            configs.append(config)
    configs.sort(key=lambda c: tuple((v is None, v if v is not None else 0) for v in c))
    varying = [i for i in range(len(_CONFIG_FIELDS)) if len({c[i] for c in configs}) > 1]
    fixed = [i for i in range(len(_CONFIG_FIELDS)) if i not in varying]

    def header(config: tuple[Any, ...]) -> str:
        return (
            " ".join(_setting_label(_CONFIG_FIELDS[i], config[i]) for i in varying) or "image / pixel AUROC"
        )

    categories = sorted({r.trial.category for r in results})
    cells: dict[tuple[str, tuple[Any, ...]], tuple[float | None, float | None]] = {}
    for category in categories:
        for config in configs:
            group = [
                r
                for r in results
                if r.trial.category == category
                and tuple(getattr(r.trial, f) for f in _CONFIG_FIELDS) == config
            ]
            if group:
                cells[category, config] = (
                    _mean(r.image_auroc for r in group),
                    _mean(r.pixel_auroc for r in group),
                )
    lines = [
        "| category | " + " | ".join(header(c) for c in configs) + " |",
        "|---|" + "---|" * len(configs),
    ]
    for category in categories:
        row = []
        for config in configs:
            img, px = cells.get((category, config), (None, None))
            row.append(f"{_percent(img)} / {_percent(px)}" if (category, config) in cells else MISSING)
        lines.append(f"| {category} | " + " | ".join(row) + " |")
    means = []
    for config in configs:
        present = [cells[c, config] for c in categories if (c, config) in cells]
        means.append(f"{_percent(_mean(p[0] for p in present))} / {_percent(_mean(p[1] for p in present))}")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    n_seeds = len({r.trial.seed for r in results})
    note = "image / pixel AUROC in %" + (f", mean over {n_seeds} seeds" if n_seeds > 1 else "")
    note += "; " + ", ".join(_setting_label(_CONFIG_FIELDS[i], configs[0][i]) for i in fixed)
    return "\n".join(lines) + f"\n\n{note}\n"


# --------------------------------------------------------------------------- Ray plumbing


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(f"Ray is not installed: {RAY_INSTALL_HINT}") from exc
    return ray


_connection_lock = threading.Lock()
_connected_address: list[str | None] = []  # the address this module connected to, if it did


def _runtime_env() -> dict[str, Any]:
    """Ships this very ``cainnflow`` package to the workers (same code as the caller)."""
    return {"py_modules": [str(Path(__file__).resolve().parent)]}


def connect_ray(address: str | None) -> bool:
    """Connects this process to Ray: a new local instance (``address=None``) or a cluster.

    A connection made elsewhere in the process is reused, and so is this module's own when
    ``address`` names it (the same string, ``"auto"`` or its GCS address). A connection this
    module made to another address is closed first.

    Returns:
        True when this call connected (the caller may :func:`ray.shutdown` when done).

    Raises:
        RayUnavailableError: Ray is missing or the cluster cannot be reached.
    """
    ray = _import_ray()
    with _connection_lock:
        if ray.is_initialized():
            if not _connected_address or address in (_connected_address[0], "auto", _gcs_address(ray)):
                return False
            ray.shutdown()
            _connected_address.clear()
        try:
            if address is None:
                ray.init(
                    num_cpus=os.cpu_count() or 1,
                    include_dashboard=False,
                    runtime_env=_runtime_env(),
                    logging_level=logging.WARNING,
                )
            else:
                ray.init(address=address, runtime_env=_runtime_env(), logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = "start a local Ray" if address is None else f"reach the Ray cluster at {address}"
            raise RayUnavailableError(f"could not {where}: {first}") from exc
        _connected_address[:] = [address]
        return True


def _gcs_address(ray: ModuleType) -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # a Ray Client connection has no GCS address of its own
        return None


def disconnect_ray() -> None:
    """Closes the connection :func:`connect_ray` made (a local instance stops with it)."""
    ray = _import_ray()
    with _connection_lock:
        if _connected_address and ray.is_initialized():
            ray.shutdown()
        _connected_address.clear()


def _check_resources(ray: ModuleType, cpus: float, gpus: float) -> None:
    available = ray.cluster_resources()
    if gpus > available.get("GPU", 0.0):
        raise RayUnavailableError(
            f"the Ray cluster has {available.get('GPU', 0.0):g} GPUs; a trial asking for {gpus:g} "
            "could never start (lower --gpus-per-trial, or join a cluster with GPUs via --address)"
        )
    if cpus > available.get("CPU", 0.0):
        raise RayUnavailableError(
            f"the Ray cluster has {available.get('CPU', 0.0):g} CPUs; a trial asking for {cpus:g} "
            "could never start (lower --cpus-per-trial)"
        )


# --------------------------------------------------------------------------- the sweep


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
    failed: list[tuple[Trial, str]]
    seconds: float
    results_path: Path
    table_path: Path
    table: str
    results: list[TrialResult] = field(default_factory=list)


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
    failed: list[tuple[Trial, str]] = []
    done = skipped

    def finish(trial: Trial, outcome: TrialOutcome | str) -> None:
        nonlocal done
        done += 1
        if isinstance(outcome, str):
            failed.append((trial, outcome))
            report(SweepProgress(done, len(trials), trial, error=outcome, skipped=skipped))
        else:
            result = _record(out, trial, outcome, root_text, results)
            report(SweepProgress(done, len(trials), trial, result=result, skipped=skipped))

    try:
        if pending and use_ray:
            _run_on_ray(pending, root_text, address, cpus_per_trial, gpus_per_trial, device, finish)
        else:
            for trial in pending:
                try:
                    finish(trial, run_trial(trial, root_text, device=device))
                except CainnflowError as exc:
                    finish(trial, f"{type(exc).__name__}: {exc}")
    finally:
        table = paper_table(results)
        write_bytes_atomically(out / TABLE_FILE, table.encode("utf-8"))
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


def _run_on_ray(
    pending: Sequence[Trial],
    data_root: str,
    address: str | None,
    cpus: float,
    gpus: float,
    device: str,
    finish: Callable[[Trial, TrialOutcome | str], None],
) -> None:
    ray = _import_ray()
    started = connect_ray(address)
    refs: dict[Any, Trial] = {}
    try:
        _check_resources(ray, cpus, gpus)
        task = ray.remote(_trial_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
        threads = max(1, math.floor(cpus))
        refs = {task.remote(t, data_root, device, threads): t for t in pending}
        while refs:
            # A timeout, so Ctrl-C reaches Python within a second (a blocking wait would hold it).
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=WAIT_TIMEOUT_S)
            for ref in ready:
                trial = refs.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # a worker crash or a bug in the task: keep the sweep going
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                    outcome = f"{type(exc).__name__}: {first}"
                finish(trial, outcome)
    finally:
        for ref in refs:
            ray.cancel(ref, force=True)
        if started:
            disconnect_ray()


# --------------------------------------------------------------------------- one remote training


class _ProgressBoard:
    """A tiny Ray actor: the remote trainer pushes progress, the caller polls and may cancel."""

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._cancelled = False

    def push(self, item: dict[str, Any]) -> None:
        self._items.append(item)

    def take(self, start: int) -> list[dict[str, Any]]:
        return self._items[start:]

    def size(self) -> int:
        return len(self._items)

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


def _remote_training_task(
    board: Any,
    name: str,
    files: list[tuple[str, bytes]],
    config: dict[str, Any],
    train_config: dict[str, Any],
    weights: str,
    weights_file: bytes | None,
    device: str,
) -> dict[str, Any]:
    """The Ray task body of :func:`train_remote`: trains on shipped images, returns the checkpoint."""
    import ray

    cancel = Event()
    stop = Event()

    def watch() -> None:
        while not stop.wait(CANCEL_POLL_S):
            if ray.get(board.cancelled.remote()):
                cancel.set()
                return

    last = {"time": 0.0, "phase": ""}

    def push(progress: TrainProgress) -> None:
        now = time.monotonic()
        boundary = progress.phase != last["phase"] or progress.step == progress.steps
        if boundary or now - last["time"] >= PROGRESS_INTERVAL_S:
            board.push.remote(asdict(progress))
            last.update(time=now, phase=progress.phase)

    watcher = threading.Thread(target=watch, name="cainnflow-cancel-watch", daemon=True)
    watcher.start()
    try:
        with tempfile.TemporaryDirectory(prefix="cainnflow-remote-") as tmp:
            folder = Path(tmp) / "train" / GOOD_TYPE
            folder.mkdir(parents=True)
            samples = []
            for index, (suffix, payload) in enumerate(files):
                path = folder / f"{index:06d}{suffix}"
                path.write_bytes(payload)
                samples.append(Sample(path, GOOD_LABEL, GOOD_TYPE))
            data = CategoryData(name, Path(tmp), tuple(samples), ())
            if weights_file is not None:
                weights = str(Path(tmp) / "backbone_weights")
                Path(weights).write_bytes(weights_file)
            detector = Detector.create(CAINNFlowConfig.from_dict(config), weights=weights, device=device)
            detector.fit(data, TrainConfig(**train_config), callback=push, cancel=cancel)
            payload = detector.to_bytes()
        ray.get(board.size.remote())  # every push above is processed before the caller drains
        return {
            "status": "ok",
            "checkpoint": payload,
            "device": str(detector.device),
            "host": socket.gethostname(),
        }
    except TrainingCancelled as exc:
        return {"status": "cancelled", "message": str(exc)}
    except CainnflowError as exc:
        return {"status": "error", "type": type(exc).__name__, "message": str(exc)}
    finally:
        stop.set()


def train_remote(
    data: CategoryData,
    config: CAINNFlowConfig,
    train_config: TrainConfig | None = None,
    *,
    address: str | None,
    weights: str | Path = "auto",
    device: str = "auto",
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    callback: ProgressCallback | None = None,
    cancel: Event | None = None,
) -> bytes:
    """Trains one detector as a Ray task and returns its checkpoint bytes.

    The good training images (``data.train``) travel with the task, so the cluster needs no
    access to this machine's files. Progress reaches ``callback`` as
    :class:`~cainnflow.training.TrainProgress` (through a small actor the trainer pushes to and
    this call polls); setting ``cancel`` stops the remote training within a batch, keeping the
    best epoch so far, as :meth:`Detector.fit` does locally.

    Args:
        data: the category (:class:`~cainnflow.data.CategoryData`); only ``train`` is used.
        config: the model configuration (:class:`~cainnflow.model.CAINNFlowConfig`).
        train_config: optimisation settings (:class:`~cainnflow.training.TrainConfig`).
        address: the Ray cluster (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``); None
            starts a local Ray.
        weights: backbone weights, ``"auto"``, ``"random"`` or a local file (shipped along).
        device: the device on the worker (``"auto"`` uses the GPU Ray gives the task).
        num_cpus: CPUs the task asks for.
        num_gpus: GPUs the task asks for; None asks for one when the cluster has any.
        callback: receives the remote trainer's progress.
        cancel: set to stop the training.

    Returns:
        The checkpoint (``.safetensors`` bytes), for :meth:`Detector.load`.

    Raises:
        RayUnavailableError: Ray missing, cluster unreachable, or resources it cannot offer.
        TrainingCancelled: cancelled before the first epoch finished.
        CainnflowError: the remote training failed (its message).
    """
    ray = _import_ray()
    if not data.train:
        raise DataError(f"{data.name} has no training images")
    connect_ray(address)
    gpus = num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0.0) >= 1 else 0.0
    _check_resources(ray, num_cpus, gpus)
    files = [(s.path.suffix.lower(), Path(s.path).read_bytes()) for s in data.train]
    weights_file = None
    if str(weights) not in ("auto", "random"):
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise CainnflowError(f"backbone weights file {weights_path} does not exist")
        weights_file = weights_path.read_bytes()
    board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
    task = ray.remote(_remote_training_task).options(num_cpus=num_cpus, num_gpus=gpus, max_retries=0)
    ref = task.remote(
        board,
        data.name,
        ray.put(files),
        config.to_dict(),
        (train_config or TrainConfig()).to_dict(),
        str(weights),
        weights_file,
        device,
    )
    seen = 0
    cancel_deadline: float | None = None
    finished = False
    try:
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_INTERVAL_S)
            items = ray.get(board.take.remote(seen))
            seen += len(items)
            if callback is not None:
                for item in items:
                    callback(TrainProgress(**item))
            if ready:
                break
            if cancel is not None and cancel.is_set():
                if cancel_deadline is None:
                    board.cancel.remote()
                    cancel_deadline = time.monotonic() + CANCEL_GRACE_S
                elif time.monotonic() > cancel_deadline:
                    raise TrainingCancelled(
                        "cancelled; the remote training did not stop in time and was ended"
                    )
        reply = ray.get(ref)
        finished = True
    finally:
        if not finished:
            ray.cancel(ref, force=True)
        ray.kill(board)
    if reply["status"] == "cancelled":
        raise TrainingCancelled(reply["message"])
    if reply["status"] == "error":
        kind = getattr(errors, reply.get("type", ""), CainnflowError)
        kind = kind if isinstance(kind, type) and issubclass(kind, CainnflowError) else CainnflowError
        raise kind(f"on the Ray cluster: {reply['message']}")
    return reply["checkpoint"]


# --------------------------------------------------------------------------- command line


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``sweep`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "sweep",
        help="train and evaluate every combination of settings (Ray tasks; resumable)",
        description=(
            "Every combination of categories x backbones x variants x steps x image sizes x seeds is "
            "trained and evaluated as a Ray task (a local Ray unless --address joins a cluster). "
            "Each finished trial appends a row to OUT/results.csv and writes OUT/checkpoints/KEY.safetensors; "
            "rerunning the same command skips finished trials. OUT/table.md holds the paper-format table."
        ),
    )
    p.add_argument(
        "--data-root", type=Path, required=True, help="MVTec-layout root (every worker must see it)"
    )
    p.add_argument("--categories", nargs="+", required=True)
    p.add_argument("--backbones", nargs="+", default=None, choices=sorted(BACKBONES), metavar="BACKBONE")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS)
    p.add_argument("--steps", type=int, nargs="+", default=None, help="coupling blocks per scale")
    p.add_argument("--image-sizes", type=int, nargs="+", default=None, help="default: each backbone's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--epochs", type=int, default=None, help="default: the library's step budget with early stopping"
    )
    p.add_argument("--lr", type=float, default=None, help=f"default: {TrainConfig.lr:g}")
    p.add_argument("--batch-size", type=int, default=None, help=f"default: {TrainConfig.batch_size}")
    p.add_argument("--weights", default="auto", help="backbone weights: auto, random (tests only), or a file")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    p.add_argument("--out", type=Path, required=True, help="folder for results.csv, table.md, checkpoints/")
    p.add_argument("--address", default=None, help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractions share a GPU, e.g. 0.25")
    p.add_argument("--no-ray", action="store_true", help="run the trials one after another in this process")
    return p


def _print_progress(p: SweepProgress) -> None:
    if p.trial is None:
        print(
            f"sweep: {p.total} trials, {p.skipped} already finished, {p.total - p.skipped} to run", flush=True
        )
        return
    head = f"[{p.done}/{p.total}] {p.trial.label}"
    if p.error is not None:
        print(f"{head}: FAILED: {p.error}", flush=True)
        return
    r = p.result
    assert r is not None
    ms = "n/a" if r.ms_per_image is None else f"{r.ms_per_image:.1f}"
    print(
        f"{head}: image AUROC {format_metric(r.image_auroc)}  pixel AUROC {format_metric(r.pixel_auroc)}  AUPRO {format_metric(r.aupro)}"
        f"  train {r.train_s:.1f} s  {ms} ms/image  {r.device}@{r.host}",
        flush=True,
    )


def run_sweep_command(args: argparse.Namespace) -> int:
    """Runs ``python -m cainnflow sweep``; 0 when every trial finished, 2 when some failed."""
    if args.no_ray and args.address:
        raise CainnflowError("--address joins a Ray cluster; it cannot be combined with --no-ray")
    if not args.no_ray:
        try:
            _import_ray()
        except RayUnavailableError as exc:
            raise RayUnavailableError(f"{exc}; or run the trials serially with --no-ray") from exc
    grid = SweepGrid(
        categories=tuple(args.categories),
        backbones=tuple(args.backbones or ()),
        variants=tuple(args.variants or ()),
        steps=tuple(args.steps or ()),
        image_sizes=tuple(args.image_sizes or (None,)),
        seeds=tuple(args.seeds),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weights=str(args.weights),
    )
    summary = run_sweep(
        grid,
        args.out,
        args.data_root,
        use_ray=not args.no_ray,
        address=args.address,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        device=args.device,
        on_progress=_print_progress,
    )
    print()
    print(summary.table, end="")
    print(
        f"\n{summary.ran} trials run, {summary.skipped} skipped (already finished), {len(summary.failed)} failed "
        f"in {summary.seconds:.1f} s; results in {summary.results_path}, table in {summary.table_path}"
    )
    return EXIT_TRIALS_FAILED if summary.failed else 0
