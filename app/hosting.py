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
- **Sessions.** ``CAINNFLOW_SESSION_MB`` caps a session folder's size (hosted default 1 GiB),
  ``CAINNFLOW_SESSION_TTL_H`` removes sessions idle that long, with their folders (hosted
  default 24 h, else 30 days).
- **Jobs.** ``CAINNFLOW_MAX_JOBS`` caps concurrent jobs on the server: trainings and batch
  scorings.
- **Test-only options** (random backbone weights) show only with ``CAINNFLOW_DEV=1``.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from cainnflow.data import IMAGE_EXTENSIONS, read_image
from cainnflow.errors import DataError

__all__ = [
    "DATA_ROOTS_ENV",
    "DEV_ENV",
    "HOSTED_ENV",
    "KEEP_SIDE",
    "MAX_JOBS_ENV",
    "MAX_UPLOAD_PIXELS",
    "SESSION_MB_ENV",
    "SESSION_TTL_ENV",
    "PathNotAllowed",
    "ZipLimits",
    "allowed_category",
    "allowed_path",
    "allowed_roots",
    "check_image_header",
    "decode_upload",
    "dev_mode",
    "extract_zip",
    "folder_bytes",
    "idle_sessions",
    "is_folder_name",
    "is_hosted",
    "keep_within_quota",
    "max_jobs",
    "png_bytes",
    "require_room",
    "session_quota_bytes",
    "session_room",
    "session_ttl_s",
]

HOSTED_ENV = "CAINNFLOW_HOSTED"
DATA_ROOTS_ENV = "CAINNFLOW_DATA_ROOTS"
MAX_JOBS_ENV = "CAINNFLOW_MAX_JOBS"
DEV_ENV = "CAINNFLOW_DEV"
SESSION_MB_ENV = "CAINNFLOW_SESSION_MB"
SESSION_TTL_ENV = "CAINNFLOW_SESSION_TTL_H"
DEFAULT_SESSION_MB_HOSTED = 1024
DEFAULT_SESSION_TTL_H_HOSTED = 24.0
DEFAULT_SESSION_TTL_H = 30 * 24.0
SEEN_FILE = ".last_seen"
"""Touched in a session's folder when it is used; its age decides expiry."""
DEFAULT_MAX_JOBS_HOSTED = 1
DEFAULT_MAX_JOBS_LOCAL = 2

MAX_UPLOAD_PIXELS = 64_000_000
"""Uploaded images above this many pixels are refused before they are decoded."""
KEEP_SIDE = 1024
"""Uploaded images are kept at most this many pixels on their longer side."""
MAX_MEMBER_NAME = 400
"""Longest zip entry name accepted (characters)."""
MAX_NAME_PART = 150
"""Longest folder or file name inside a zip entry (bytes; file systems allow 255)."""
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
    raise PathNotAllowed(_NOT_ALLOWED)


_NOT_ALLOWED = (
    "that folder is not inside the data folders this app may read; upload the images instead "
    f"(the server's allowed folders are set by {DATA_ROOTS_ENV})"
)
MAX_FOLDER_NAME = 200


def allowed_category(root: Path, category: str, home: Path) -> Path:
    """``root / category`` for a category that is one folder name, inside the allowed roots.

    A recorded category (from a checkpoint or a session file) is never a path: ``/etc`` or
    ``../x`` is refused with the same message as a folder outside the roots.
    """
    if not is_folder_name(category):
        raise PathNotAllowed(_NOT_ALLOWED)
    return allowed_path(str(root / category), home)


def is_folder_name(text: str) -> bool:
    """One plain folder name: not empty, not ``.``/``..``, no separators or NULs, at most 200 characters."""
    return (
        isinstance(text, str)
        and 0 < len(text) <= MAX_FOLDER_NAME
        and text not in (".", "..")
        and not any(c in text for c in ("/", "\\", "\0"))
    )


# --------------------------------------------------------------------------- session budgets


def _number_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if value >= 0 else default


def session_quota_bytes() -> int | None:
    """Disk a session's folder may use (``CAINNFLOW_SESSION_MB``; 0: no cap). Hosted default 1 GiB."""
    megabytes = _number_env(SESSION_MB_ENV, DEFAULT_SESSION_MB_HOSTED if is_hosted() else 0)
    return int(megabytes * 1024**2) if megabytes > 0 else None


def session_ttl_s() -> float | None:
    """How long an idle session and its folder are kept (``CAINNFLOW_SESSION_TTL_H``; 0: forever)."""
    hours = _number_env(
        SESSION_TTL_ENV, DEFAULT_SESSION_TTL_H_HOSTED if is_hosted() else DEFAULT_SESSION_TTL_H
    )
    return hours * 3600 if hours > 0 else None


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, filename)).st_size
            except OSError:
                continue
    return total


def session_room(folder: Path) -> int | None:
    """Bytes a session may still write into its folder (None: no cap)."""
    quota = session_quota_bytes()
    return None if quota is None else max(quota - folder_bytes(folder), 0)


def require_room(folder: Path, n_bytes: int) -> None:
    """Raises DataError when writing ``n_bytes`` more would take the session over its cap."""
    room = session_room(folder)
    if room is not None and n_bytes > room:
        quota = session_quota_bytes() or 0
        raise DataError(
            f"this session's storage is full ({quota / 1024**2:.0f} MiB); remove uploads or start a new session"
        )


def keep_within_quota(folder: Path, written: Path) -> None:
    """Removes ``written`` again when it took the session's folder over its cap.

    For files whose size is known only once written (checkpoints).

    Raises:
        DataError: the file was removed.
    """
    quota = session_quota_bytes()
    if quota is not None and folder_bytes(folder) > quota:
        written.unlink(missing_ok=True)
        raise DataError(
            f"this session's storage is full ({quota / 1024**2:.0f} MiB); remove uploads or start a new session"
        )


def idle_sessions(sessions: Path, ttl_s: float, now: float) -> list[Path]:
    """Session folders under ``sessions`` not used for ``ttl_s`` seconds (by :data:`SEEN_FILE`)."""
    idle = []
    for folder in sessions.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            continue
        seen = folder / SEEN_FILE
        try:
            last = seen.stat().st_mtime if seen.exists() else folder.stat().st_mtime
        except OSError:
            continue
        if now - last > ttl_s:
            idle.append(folder)
    return idle


# --------------------------------------------------------------------------- uploads


def _too_many_pixels(name: str, width: int, height: int) -> DataError:
    return DataError(
        f"cannot read image {name}: {width}x{height} pixels is more than this app accepts "
        f"({MAX_UPLOAD_PIXELS // 1_000_000} megapixels)"
    )


def check_image_header(data: bytes, name: str) -> None:
    """Refuses an image whose header declares more than :data:`MAX_UPLOAD_PIXELS` (nothing decoded).

    Bytes that are not an image are let through: the reader reports them where they are used.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return
    except Image.DecompressionBombWarning:
        raise DataError(f"cannot read image {name}: it is too large") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise _too_many_pixels(name, width, height)


def decode_upload(data: bytes, name: str) -> bytes:
    """An uploaded image, checked and made small and safe to keep.

    Goes through the library's decode guard (:func:`cainnflow.image_io.read_image`: pixels
    counted before decoding, reduced while decoding, mode and EXIF orientation normalised).
    Small RGB / grey / palette images come back unchanged; everything else is re-encoded as
    an RGB PNG at most :data:`KEEP_SIDE` wide.

    Raises:
        DataError: not an image, or more than :data:`MAX_UPLOAD_PIXELS` pixels.
    """
    check_image_header(data, name)
    image = read_image(data, name=name, max_side=KEEP_SIDE, max_pixels=MAX_UPLOAD_PIXELS)
    try:
        with Image.open(io.BytesIO(data)) as original:
            as_is = (
                original.size == image.size
                and original.format in ("PNG", "JPEG")
                and original.mode in ("RGB", "L", "P")
                and original.getexif().get(_ORIENTATION_TAG, 1) == 1
            )
    except Exception:
        as_is = False
    return data if as_is else png_bytes(image)


_ORIENTATION_TAG = 0x0112


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
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
    """The member's relative path, or None when it is a folder or metadata; refuses unsafe names."""
    if name.endswith("/"):
        return None
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts or ":" in path.parts[0]:
        raise DataError(f"the zip holds an unsafe member name {name[:80]!r}; nothing was kept")
    if len(name) > MAX_MEMBER_NAME or any(len(part.encode()) > MAX_NAME_PART for part in path.parts):
        raise DataError(f"the zip holds an entry name that is too long ({name[:40]!r}…); nothing was kept")
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return None  # hidden files and macOS metadata
    return path


def is_image_name(path: PurePosixPath | Path) -> bool:
    """Whether a file name has an image extension the library reads."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def extract_zip(
    data: bytes,
    dest: Path,
    limits: ZipLimits | None = None,
    *,
    room: int | None = None,
    skipped: list[str] | None = None,
) -> list[Path]:
    """Extracts the images of an uploaded zip into ``dest`` (a new folder); returns the written files.

    Only images are kept (masks are images); other members are listed in ``skipped``.
    Refuses (one :class:`DataError`, nothing left behind) archives with too many members,
    too large a total uncompressed size (or more than ``room`` bytes of images: the
    session's free space), absolute, ``..`` or overlong member names, a file and a folder of
    the same name, symbolic links and images with more than :data:`MAX_UPLOAD_PIXELS`
    pixels. Each member is read with a bounded size, so a header that lies about its size
    cannot make it write more.
    """
    limits = limits or ZipLimits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"the upload is not a readable zip archive ({exc})") from exc
    existed = dest.exists()
    try:
        with archive:
            plan = _zip_plan(archive, limits, skipped)
            budget = limits.max_total_bytes if room is None else min(limits.max_total_bytes, room)
            planned = sum(member.file_size for member, _ in plan)
            if planned > budget:
                raise DataError(
                    f"the zip's images unpack to {planned / 1024**2:.0f} MiB; this session has room for "
                    f"{max(budget, 0) / 1024**2:.0f} MiB"
                )
            return _write_plan(archive, plan, dest, budget)
    except DataError:
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    except OSError as exc:  # a name the file system refuses, a full disk: nothing is left behind
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        raise DataError(
            f"the zip could not be unpacked ({exc.strerror or type(exc).__name__}); nothing was kept"
        ) from exc


def _zip_plan(
    archive: zipfile.ZipFile, limits: ZipLimits, skipped: list[str] | None
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The image members to write, after every check that needs no decompression."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise DataError(f"the zip holds {len(members)} entries; at most {limits.max_members} are accepted")
    total = sum(m.file_size for m in members)
    if total > limits.max_total_bytes:
        raise DataError(
            f"the zip unpacks to {total / 1024**2:.0f} MiB; at most "
            f"{limits.max_total_bytes / 1024**2:.0f} MiB are accepted"
        )
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    for member in members:
        if stat.S_ISLNK(member.external_attr >> 16):
            raise DataError(f"the zip holds a symbolic link ({member.filename[:80]!r}); nothing was kept")
        path = _safe_member_name(member.filename)
        if path is None:
            continue
        if not is_image_name(path):
            if skipped is not None:
                skipped.append(str(path)[:120])
            continue
        if member.file_size > limits.max_member_bytes:
            raise DataError(f"{path.name} in the zip is larger than {limits.max_member_bytes // 1024**2} MiB")
        plan.append((member, path))
    files = {p.as_posix().casefold() for _, p in plan}
    folders = {parent.as_posix().casefold() for _, p in plan for parent in p.parents}
    clash = files & folders
    if clash:
        raise DataError(
            f"the zip holds a file and a folder both named {sorted(clash)[0][:80]!r}; nothing was kept"
        )
    if len(files) != len(plan):
        raise DataError("the zip holds two entries with the same name; nothing was kept")
    return plan


def _write_plan(
    archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path, budget: int
) -> list[Path]:
    written: list[Path] = []
    for member, path in plan:
        try:
            with archive.open(member) as source:
                content = source.read(min(member.file_size, budget) + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot unpack {path.name} from the zip ({exc}); nothing was kept") from exc
        if len(content) > member.file_size or len(content) > budget:
            raise DataError("the zip's sizes do not match its contents; nothing was kept")
        check_image_header(content, path.name)
        budget -= len(content)
        target = dest.joinpath(*path.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    return written
