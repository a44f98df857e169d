"""Per-task file locks: a second ``backup``/``cleanup``/... run exits 75 at once.

The lock is ``<state>/locks/<task>.lock``, taken with ``filelock`` (``flock(2)`` on
Unix), so it is released by the kernel when its holder dies: a lock left by a killed
process never blocks. The holder's pid and start time go to a sidecar
``<task>.lock.json`` only so that the refusal can say who holds the lock.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from testviper.errors import LockHeld, UserError
from testviper.fsutil import atomic_write


def lock_path(state_dir: Path, task: str) -> Path:
    return state_dir / "locks" / f"{task}.lock"


def _holder(sidecar: Path) -> str:
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        return f" (pid {int(info['pid'])} since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextmanager
def job_lock(state_dir: Path, task: str) -> Iterator[Path]:
    """Hold the lock for ``task`` for the duration of the block; LockHeld if taken."""
    path = lock_path(state_dir, task)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"paths.state: cannot create the lock directory '{path.parent}' ({exc.strerror})"
        ) from None
    sidecar = path.with_name(path.name + ".json")
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(
            f"another {task} run holds the lock{_holder(sidecar)}; skipped (lock file {path})"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot take the {task} lock ({exc.strerror})") from None
    try:
        since = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write(sidecar, json.dumps({"pid": os.getpid(), "since": since}))
        yield path
    finally:
        lock.release()
