"""Two trainings at once on a few cores: each one's training speed against running alone.

    python benchmarks/contention.py                      # cainnflow's defaults (passive OpenMP)
    python benchmarks/contention.py --wait-policy active # what PyTorch does without them

Each job is a separate process that imports cainnflow (so its OpenMP settings apply before
PyTorch loads), builds the default model (EfficientNet-Lite0, stages 1-4, 256 px) and runs
``--steps`` maximum-likelihood training steps on cached-feature-shaped tensors with
``--threads`` threads, after ``--warmup`` steps. It runs one job alone, then ``--jobs`` jobs
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
    """One training job: prints a JSON line with its seconds per step."""
    sys.path.insert(0, str(ROOT))
    import torch

    import cainnflow  # noqa: F401 - OpenMP settings before torch
    from cainnflow.detector import Detector
    from cainnflow.model import negative_log_likelihood

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    detector = Detector.create(device="cpu", weights="random")
    model = detector.model
    shapes = model.feature_shapes
    features = [torch.randn(args.batch, c, h, w) for c, h, w in shapes]
    model.fit_standardizers(features)
    optimizer = torch.optim.Adam(model.flow_parameters(), lr=1e-3)
    model.flows.train()
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        loss = negative_log_likelihood(model(features))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"s_per_step": sum(times) / len(times), "median": times[len(times) // 2]}))


def run_jobs(n: int, args: argparse.Namespace) -> list[float]:
    env = dict(os.environ)
    if args.wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.wait_policy.upper()
        env["KMP_BLOCKTIME"] = "0" if args.wait_policy == "passive" else "200"
    env["CAINNFLOW_DEV"] = "1"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        f"--threads={args.threads}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch={args.batch}",
    ]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a job failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1])["s_per_step"])
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
        "--wait-policy",
        choices=("default", "passive", "active"),
        default="default",
        help="default: whatever cainnflow sets (passive unless the environment says otherwise)",
    )
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    solo = run_jobs(1, args)[0]
    together = run_jobs(args.jobs, args)
    print(
        f"wait policy {args.wait_policy}, {args.threads} threads per job, batch {args.batch}, "
        f"{os.cpu_count()} cores"
    )
    print(f"alone:           {solo:.3f} s/step")
    for i, t in enumerate(together, start=1):
        print(f"{args.jobs} at once, job {i}: {t:.3f} s/step  -> keeps {solo / t:.0%} of its solo speed")
    print(f"worst share kept: {min(solo / t for t in together):.0%} (target >= 40%)")


if __name__ == "__main__":
    main()
