"""The paper's Tables 2–3 on MVTec AD through the library's sweep (one implementation).

A thin caller of ``python -m cainnflow sweep`` with benchmark defaults: bottle from the shared
MVTec AD folder, the four subnet variants × steps 1–3, results in ``runs/sweep_table2``. Any
option of the ``sweep`` command can be given and overrides the default; a rerun resumes.
Afterwards it prints the paper's ResNet18 numbers for the same settings and the wall time.

    python benchmarks/sweep.py                                  # Table 2 × steps 1–3 on a local Ray
    python benchmarks/sweep.py --no-ray --out runs/sweep_serial  # the same, one trial after another
    python benchmarks/sweep.py --categories bottle cable --backbones resnet18 --address ray://head:10001
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_MVTEC_ROOT, PAPER_TABLE2_BOTTLE, PAPER_TABLE3_BOTTLE
from cainnflow.cli import add_sweep_parser, run_sweep_command
from cainnflow.errors import CainnflowError

DEFAULTS = [
    "--data-root",
    str(DEFAULT_MVTEC_ROOT),
    "--categories",
    "bottle",
    "--variants",
    "CA",
    "AC",
    "CAC",
    "CC",
    "--steps",
    "1",
    "2",
    "3",
    "--out",
    "runs/sweep_table2",
]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_sweep_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", *DEFAULTS, *sys.argv[1:]])  # later options win
    start = time.perf_counter()
    try:
        code = run_sweep_command(args)
    except CainnflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "bottle" in args.categories:
        print("\npaper Table 2 (ResNet18, 2 steps, bottle pixel AUROC):", PAPER_TABLE2_BOTTLE)
        print("paper Table 3 (ResNet18 CAC, bottle pixel AUROC by steps):", PAPER_TABLE3_BOTTLE)
    mode = "serial (--no-ray)" if args.no_ray else f"Ray, {args.cpus_per_trial:g} CPU per trial"
    print(f"wall time {time.perf_counter() - start:.1f} s ({mode})")
    return code


if __name__ == "__main__":
    sys.exit(main())
