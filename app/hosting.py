"""Settings for running the app where strangers use it, and the checks they need.

Everything a browser user can point the server at goes through here:

- **Data roots.** ``CAINNFLOW_DATA_ROOTS`` (folders separated by ``os.pathsep``) lists the
  server folders the app may read datasets from. With ``CAINNFLOW_HOSTED=1`` and no list,
  only the app's home (demo data, uploads) is allowed; without hosting and without a list,
  any folder is (a local, single-user app). A refused path gets the same message whether
  it exists or not, so nothing is revealed about the disk outside the roots.
- **Uploads.** Images are checked for their pixel count before decoding, JPEGs are decoded
  at reduced size (``draft``) and everything kept is at most :data:`KEEP_SIDE` pixels wide;
  zip archives are checked for member count, total uncompressed size and unsafe names
  before anything is written.
- **Jobs.** ``CAINNFLOW_MAX_JOBS`` caps concurrent training jobs on the server.
- **Test-only options** (random backbone weights) show only with ``CAINNFLOW_DEV=1``.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from cainnflow.data import read_image
from cainnflow.errors import DataError

__all__ = [
    "DATA_ROOTS_ENV",
    "DEV_ENV",
    "HOSTED_ENV",
    "KEEP_SIDE",
    "MAX_JOBS_ENV",
    "MAX_UPLOAD_PIXELS",
    "PathNotAllowed",
    "ZipLimits",
    "allowed_path",
    "allowed_roots",
    "decode_upload",
    "dev_mode",
    "extract_zip",
    "is_hosted",
    "max_jobs",
]

HOSTED_ENV = "CAINNFLOW_HOSTED"
DATA_ROOTS_ENV = "CAINNFLOW_DATA_ROOTS"
MAX_JOBS_ENV = "CAINNFLOW_MAX_JOBS"
DEV_ENV = "CAINNFLOW_DEV"
DEFAULT_MAX_JOBS_HOSTED = 1
DEFAULT_MAX_JOBS_LOCAL = 2

MAX_UPLOAD_PIXELS = 64_000_000
"""Uploaded images above this many pixels are refused before they are decoded."""
KEEP_SIDE = 1024
"""Uploaded images are kept at most this many pixels on their longer side."""
_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def is_hosted() -> bool:
    """Whether the app runs for strangers (``CAINNFLOW_HOSTED=1``)."""
    return _flag(HOSTED_ENV)


def dev_mode() -> bool:
    """Whether test-only options are shown (``CAINNFLOW_DEV=1``)."""
    return _flag(DEV_ENV)


def max_jobs() -> int:
    """How many training jobs may run at once on this server."""
    text = os.environ.get(MAX_JOBS_ENV, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return DEFAULT_MAX_JOBS_HOSTED if is_hosted() else DEFAULT_MAX_JOBS_LOCAL


def allowed_roots(home: Path) -> tuple[Path, ...] | None:
    """The folders datasets may be read from; None means anywhere (local, not hosted)."""
    listed = [p for p in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    if listed:
        return (
            *tuple(Path(os.path.realpath(os.path.expanduser(p.strip()))) for p in listed),
            Path(os.path.realpath(home)),
        )
    if is_hosted():
        return (Path(os.path.realpath(home)),)
    return None


class PathNotAllowed(DataError):
    """A typed folder lies outside the allowed data roots."""


def allowed_path(text: str, home: Path) -> Path:
    """A typed server folder, resolved, if it lies inside an allowed root.

    Raises:
        PathNotAllowed: outside every root (same message whether the path exists or not).
        DataError: empty.
    """
    text = text.strip()
    if not text:
        raise DataError("no folder given")
    resolved = Path(os.path.realpath(os.path.expanduser(text)))
    roots = allowed_roots(home)
    if roots is None or any(resolved == root or root in resolved.parents for root in roots):
        return resolved
    raise PathNotAllowed(
        "that folder is not inside the data folders this app may read; upload the images instead "
        f"(the server's allowed folders are set by {DATA_ROOTS_ENV})"
    )


# --------------------------------------------------------------------------- uploads


def decode_upload(data: bytes, name: str) -> bytes:
    """An uploaded image re-encoded as PNG at most :data:`KEEP_SIDE` wide (small, safe to keep).

    The pixel count is checked from the header before decoding; JPEGs are decoded at a
    reduced scale directly. Images already small are returned unchanged.

    Raises:
        DataError: not an image, or more than :data:`MAX_UPLOAD_PIXELS` pixels.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise DataError(
                    f"cannot read image {name}: {width}x{height} pixels is more than this app accepts "
                    f"({MAX_UPLOAD_PIXELS // 1_000_000} megapixels)"
                )
            if max(width, height) <= KEEP_SIDE:
                return data
            image.draft("RGB", (KEEP_SIDE, KEEP_SIDE))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            image.thumbnail((KEEP_SIDE, KEEP_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
            small = image.copy()
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        # Let the library word the failure (not an image, truncated, ...).
        read_image(data, name=name)
        raise DataError(f"cannot read image {name}: {exc}") from exc
    if small.mode not in ("RGB", "L", "RGBA", "LA", "P"):
        small = read_image(_png(small), name=name)
    return _png(small)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class ZipLimits:
    """Limits on an uploaded zip archive, checked before anything is extracted."""

    max_members: int = 2_000
    max_total_bytes: int = 500 * 1024**2
    max_member_bytes: int = 50 * 1024**2


def _safe_member_name(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it is a folder or unsafe (absolute, ``..``)."""
    if name.endswith("/"):
        return None
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts or ":" in path.parts[0]:
        raise DataError(f"the zip holds an unsafe member name {name[:80]!r}; nothing was extracted")
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return None  # hidden files and macOS metadata
    return path


def extract_zip(data: bytes, dest: Path, limits: ZipLimits | None = None) -> list[Path]:
    """Extracts an uploaded zip into ``dest`` after checking it; returns the written files.

    Refuses (one :class:`DataError`, nothing written) archives with too many members, too
    large a total uncompressed size, absolute or ``..`` member names or symbolic links.
    Each member is read with a bounded size, so a header that lies about its size cannot
    make it write more.
    """
    limits = limits or ZipLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"the upload is not a readable zip archive ({exc})") from exc
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_members:
            raise DataError(
                f"the zip holds {len(members)} entries; at most {limits.max_members} are accepted"
            )
        total = sum(m.file_size for m in members)
        if total > limits.max_total_bytes:
            raise DataError(
                f"the zip unpacks to {total / 1024**2:.0f} MiB; at most "
                f"{limits.max_total_bytes / 1024**2:.0f} MiB are accepted"
            )
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for member in members:
            if stat.S_ISLNK(member.external_attr >> 16):
                raise DataError(
                    f"the zip holds a symbolic link ({member.filename[:80]!r}); nothing was extracted"
                )
            path = _safe_member_name(member.filename)
            if path is None:
                continue
            if member.file_size > limits.max_member_bytes:
                raise DataError(
                    f"{path.name} in the zip is larger than {limits.max_member_bytes // 1024**2} MiB"
                )
            plan.append((member, path))
        written: list[Path] = []
        budget = limits.max_total_bytes
        for member, path in plan:
            target = dest.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(member) as source:
                    content = source.read(min(member.file_size, budget) + 1)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                raise DataError(f"cannot unpack {path.name} from the zip ({exc})") from exc
            if len(content) > member.file_size or len(content) > budget:
                raise DataError("the zip's sizes do not match its contents; nothing more was extracted")
            budget -= len(content)
            target.write_bytes(content)
            written.append(target)
    return written
