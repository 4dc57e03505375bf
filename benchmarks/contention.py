"""Two trainings at once on a few cores: each one's training speed against running alone.

    python benchmarks/contention.py                      # cainnflow's defaults (GNU OpenMP's bounded spin)
    python benchmarks/contention.py --wait-policy active # what PyTorch does without them

Each job is a separate process that imports cainnflow (so its OpenMP settings apply before
PyTorch loads), builds the default model (EfficientNet-Lite0, stages 1-4, 256 px) and runs
``cainnflow.training.fit_flows`` — what the app, the command line and sweeps train with — for
``--steps`` steps on cached-feature-shaped tensors, starting with ``--threads`` threads, after
``--warmup`` steps. ``--no-share`` turns off the sharing (``CAINNFLOW_JOBS_DIR`` set to a fresh
folder per job, so no job sees the other); with it on, jobs take turns on the cores, one
optimizer step at a time, each with the threads it started with (``cainnflow.threads``). It runs one job alone, then ``--jobs`` jobs
at once, and prints s/step of each and the ratio of the solo speed each job keeps. Run it on
an otherwise idle machine: anything else running lowers both numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> None:
    """One training job through ``fit_flows``: prints a JSON line with its seconds per step."""
    sys.path.insert(0, str(ROOT))
    import torch

    import cainnflow  # noqa: F401 - OpenMP settings before torch
    from cainnflow.detector import Detector
    from cainnflow.training import TrainConfig, fit_flows

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Detector.create(device="cpu", weights="random").model
    features = [torch.randn(4 * args.batch, c, h, w) for c, h, w in model.feature_shapes]
    stamps: list[float] = []
    threads: list[int] = []

    def on_step(progress) -> None:
        if progress.phase == "train":
            stamps.append(time.perf_counter())
            threads.append(torch.get_num_threads())

    config = TrainConfig(
        max_steps=args.warmup + args.steps, batch_size=args.batch, patience=None, val_every=10**6
    )
    fit_flows(model, features, None, config, callback=on_step)
    times = [b - a for a, b in zip(stamps[args.warmup :], stamps[args.warmup + 1 :], strict=False)]
    print(json.dumps({"s_per_step": sum(times) / len(times), "threads": sorted(set(threads))}))


def run_jobs(n: int, args: argparse.Namespace) -> list[float]:
    env = dict(os.environ)
    if args.wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.wait_policy.upper()
        env["KMP_BLOCKTIME"] = "0" if args.wait_policy == "passive" else "200"
    env["CAINNFLOW_DEV"] = "1"
    if args.no_share:
        import tempfile
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"--threads={args.threads}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch={args.batch}",
    ]
    procs = []
    for _ in range(n):
        job_env = dict(env)
        if args.no_share:
            job_env["CAINNFLOW_JOBS_DIR"] = tempfile.mkdtemp(prefix="cainnflow-alone-")
        procs.append(
            subprocess.Popen(cmd, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        )
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a job failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="threads per job")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--no-share", action="store_true", help="no sharing: jobs neither see each other nor take turns"
    )
    parser.add_argument(
        "--wait-policy",
        choices=("default", "passive", "active"),
        default="default",
        help="default: whatever cainnflow and the environment set (GNU OpenMP: a bounded spin)",
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    solo = run_jobs(1, args)[0]
    together = run_jobs(args.jobs, args)
    print(
        f"wait policy {args.wait_policy}, {args.threads} threads per job at start, batch {args.batch}, "
        f"{os.cpu_count()} cores, taking turns {'off' if args.no_share else 'on'}"
    )
    print(f"alone:           {solo['s_per_step']:.3f} s/step  (threads {solo['threads']})")
    for i, t in enumerate(together, start=1):
        kept = solo["s_per_step"] / t["s_per_step"]
        print(
            f"{args.jobs} at once, job {i}: {t['s_per_step']:.3f} s/step  (threads {t['threads']}) -> keeps {kept:.0%}"
        )
    print(
        f"worst share kept: {min(solo['s_per_step'] / t['s_per_step'] for t in together):.0%} (target >= 40%)"
    )


if __name__ == "__main__":
    main()
