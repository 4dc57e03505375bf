"""Session lifetimes on a shared server: idle sessions expire with their folders.

Every run marks its session folder as used (at most once a minute). On a session's first
run the app removes, at most once every few minutes, the folders of sessions idle longer than
``CAINNFLOW_SESSION_TTL_H`` (:func:`app.hosting.session_ttl_s`), unless a job of theirs
still runs, and forgets their finished jobs.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from . import hosting, jobs, loaders

__all__ = ["expire_idle", "mark_used"]

MARK_EVERY_S = 60.0
EXPIRE_EVERY_S = 300.0

_lock = threading.Lock()
_last_expiry = 0.0


def mark_used(folder: Path) -> None:
    """Touches the session's :data:`app.hosting.SEEN_FILE` (at most once a minute)."""
    seen = folder / hosting.SEEN_FILE
    now = time.time()
    try:
        if seen.exists() and now - seen.stat().st_mtime < MARK_EVERY_S:
            return
        seen.touch()
        os.utime(seen, (now, now))
    except OSError:
        pass


def expire_idle(*, keep: str, force: bool = False) -> list[str]:
    """Removes sessions idle longer than the configured time; returns their tokens.

    Args:
        keep: this session's token (never removed).
        force: run even if the last sweep was less than :data:`EXPIRE_EVERY_S` ago.
    """
    global _last_expiry
    ttl = hosting.session_ttl_s()
    now = time.time()
    with _lock:
        if ttl is None or (not force and now - _last_expiry < EXPIRE_EVERY_S):
            return []
        _last_expiry = now
    removed = []
    for folder in hosting.idle_sessions(loaders.sessions_dir(), ttl, now):
        token = folder.name
        job = jobs.job_for(token)
        if token == keep or (job is not None and job.snapshot().running):
            continue
        jobs.forget(token)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(token)
    return removed
