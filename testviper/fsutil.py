"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from testviper.errors import UserError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# Read once at import (single-threaded then): os.umask can only be read by setting it.
DEFAULT_MODE = 0o666 & ~_umask()


def atomic_write(path: Path, data: bytes | str, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory.

    The temp file is fsynced, renamed over ``path`` and the directory fsynced, so a
    crash or a full disk leaves either the previous content or the new one. ``mode``
    (default: what the umask gives a new file) is set before the rename, so a secret
    is never briefly readable.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, DEFAULT_MODE if mode is None else mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path, kind: str, remedy: str = "") -> Any:
    """Parse a JSON input file; any problem is a UserError naming the file.

    ``kind`` names the file for the user ("coverage file"); ``remedy`` is appended to
    the message when the content is not JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {kind}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read {kind} ({exc})") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}){remedy}"
        ) from None
