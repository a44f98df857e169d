"""``inv cleanup``: retention for run directories, history rows and reports.

What goes, per ``retention`` in the config:

- run directories ``<state>/runs/<id>/`` older than ``run_dirs_days`` (age from the
  UUIDv7 run id, else the directory's mtime), and empty run directories (a run killed
  before it wrote anything) older than a day;
- history runs that started more than ``runs_days`` ago, except the newest
  ``runs_keep`` runs; their tests and coverage rows go with them (ON DELETE CASCADE);
- reports in ``<state>/reports/`` older than ``reports_days`` are gzipped in place;
- leftovers: hidden temp files and directories ``.*.tmp`` of interrupted atomic
  writes and backups, older than an hour.

The plan is computed first and printed the same way for ``--dry-run`` and the real
run. Only known subdirectories of the state directory are looked at, symlinks are
never followed, and every path is checked to resolve inside the state directory
before it is removed.
"""

import gzip
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from testviper.config import Settings
from testviper.errors import UserError
from testviper.fsutil import fsync_dir

if TYPE_CHECKING:
    from testviper.history.store import History

LEFTOVER_AGE = timedelta(hours=1)
EMPTY_RUN_AGE = timedelta(days=1)


@dataclass
class Entry:
    kind: str  # run-dir | history | report | leftover
    what: str  # a path, or a run id for history rows
    size: int  # bytes on disk; for history rows, the bytes of text they hold
    detail: str
    path: Path | None = None


@dataclass
class CleanupPlan:
    state: Path
    entries: list[Entry] = field(default_factory=list)
    freed: int = 0

    def of(self, kind: str) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind]


def _tree_size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += (Path(dirpath) / name).lstat().st_size
    return total


def _run_started(path: Path) -> datetime:
    """A run directory's start: the UUIDv7 timestamp of its name, else its mtime."""
    try:
        value = uuid.UUID(path.name)
        if value.version == 7:
            return datetime.fromtimestamp((value.int >> 80) / 1000, UTC)
    except ValueError:
        pass
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


def _inside(path: Path, state: Path) -> bool:
    """``path`` (not followed if it is a link) is strictly inside ``state``."""
    real = path.parent.resolve() / path.name
    return real != state and real.is_relative_to(state)


def _walk(top: Path, recursive: bool = True) -> Iterator[tuple[Path, list[str], list[str]]]:
    if not top.is_dir() or top.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(top):
        yield Path(dirpath), dirnames, filenames
        if not recursive:
            return


def _run_dirs(plan: CleanupPlan, settings: Settings, now: datetime) -> None:
    runs = plan.state / "runs"
    if not runs.is_dir() or runs.is_symlink():
        return
    days = settings.config.retention.run_dirs_days
    cutoff = now - timedelta(days=days)
    for path in sorted(runs.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        started = _run_started(path)
        if started < cutoff:
            detail = f"run directory from {started:%Y-%m-%d}, older than {days} days"
        elif not any(path.iterdir()) and _mtime(path) < now - EMPTY_RUN_AGE:
            detail = "empty run directory left by a killed run"
        else:
            continue
        plan.entries.append(Entry("run-dir", str(path), _tree_size(path), detail, path))


def _leftovers(plan: CleanupPlan, now: datetime) -> None:
    state = plan.state
    tops = [(state, False), (state / "runs", True), (state / "reports", True)]
    tops += [(state / "backups", False), (state / "locks", False)]
    doomed = {Path(e.what) for e in plan.entries if e.kind == "run-dir"}
    for top, recursive in tops:
        for dirpath, dirnames, filenames in _walk(top, recursive):
            if dirpath in doomed or any(p in doomed for p in dirpath.parents):
                dirnames[:] = []
                continue
            for name in sorted(dirnames + filenames):
                path = dirpath / name
                if not (name.startswith(".") and name.endswith(".tmp")) or path.is_symlink():
                    continue
                if _mtime(path) < now - LEFTOVER_AGE:
                    kind = "directory" if path.is_dir() else "file"
                    detail = f"temp {kind} of an interrupted write"
                    plan.entries.append(
                        Entry("leftover", str(path), _tree_size(path), detail, path)
                    )
            dirnames[:] = [d for d in dirnames if not (d.startswith(".") and d.endswith(".tmp"))]


def _reports(plan: CleanupPlan, settings: Settings, now: datetime) -> None:
    days = settings.config.retention.reports_days
    cutoff = now - timedelta(days=days)
    for dirpath, _dirnames, filenames in _walk(plan.state / "reports"):
        for name in sorted(filenames):
            path = dirpath / name
            if name.endswith((".gz", ".tmp")) or path.is_symlink() or not path.is_file():
                continue
            if _mtime(path) < cutoff and not path.with_name(name + ".gz").exists():
                detail = f"report older than {days} days: gzip"
                plan.entries.append(Entry("report", str(path), path.stat().st_size, detail, path))


def _history(plan: CleanupPlan, settings: Settings, now: datetime) -> None:
    import sqlalchemy as sa

    from testviper.history import schema
    from testviper.ops.backup import sqlite_path

    db = sqlite_path(settings.history_url)
    if db is not None and not db.is_file():
        return
    retention = settings.config.retention
    cutoff = (now - timedelta(days=retention.runs_days)).replace(tzinfo=None)
    runs, tests, files = schema.runs, schema.tests, schema.file_coverage
    newest = sa.select(runs.c.id).order_by(runs.c.id.desc()).limit(retention.runs_keep)
    n_tests = (
        sa.select(sa.func.count())
        .where(tests.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
    )
    test_bytes = (
        sa.select(
            sa.func.coalesce(
                sa.func.sum(
                    sa.func.length(tests.c.nodeid)
                    + sa.func.coalesce(sa.func.length(tests.c.message), 0)
                    + sa.func.coalesce(sa.func.length(tests.c.log), 0)
                ),
                0,
            )
        )
        .where(tests.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
    )
    n_files = (
        sa.select(sa.func.count())
        .where(files.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
    )
    file_bytes = (
        sa.select(
            sa.func.coalesce(
                sa.func.sum(
                    sa.func.length(files.c.path)
                    + sa.func.length(files.c.executed_lines)
                    + sa.func.length(files.c.missing_lines)
                ),
                0,
            )
        )
        .where(files.c.run_id == runs.c.id)
        .correlate(runs)
        .scalar_subquery()
    )
    query = (
        sa.select(runs.c.id, runs.c.started_at, n_tests, test_bytes, n_files, file_bytes)
        .where(runs.c.started_at < cutoff)
        .where(runs.c.id.not_in(newest.scalar_subquery()))
        .order_by(runs.c.id)
    )
    history = _open(settings)
    try:
        with history.engine.connect() as conn:
            rows = list(conn.execute(query))
    finally:
        history.engine.dispose()
    for run_id, started, n_t, b_t, n_f, b_f in rows:
        detail = (
            f"history run from {started:%Y-%m-%d} with {n_t} test rows and {n_f} "
            f"coverage rows, older than {retention.runs_days} days"
        )
        plan.entries.append(Entry("history", run_id, int(b_t) + int(b_f), detail))


def _open(settings: Settings) -> "History":
    from testviper.history.store import open_history

    return open_history(settings.history_url, settings.config.history.busy_timeout)


def plan_cleanup(settings: Settings, now: datetime | None = None) -> CleanupPlan:
    """Everything cleanup would remove or compress; changes nothing."""
    now = now or datetime.now(UTC)
    state = settings.state_dir.resolve()
    plan = CleanupPlan(state)
    if not state.is_dir():
        return plan
    _history(plan, settings, now)
    _run_dirs(plan, settings, now)
    _reports(plan, settings, now)
    _leftovers(plan, now)
    for entry in plan.entries:
        if entry.path is not None and not _inside(entry.path, state):
            raise UserError(f"{entry.path}: outside the state directory {state}; not touched")
    return plan


def _gzip(path: Path) -> int:
    """Compress ``path`` to ``path.gz`` atomically, keep its mtime; bytes saved."""
    target = path.with_name(path.name + ".gz")
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, open(path, "rb") as src:
            with gzip.GzipFile(filename=path.name, fileobj=raw, mode="wb", mtime=st.st_mtime) as gz:
                shutil.copyfileobj(src, gz, 1024 * 1024)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, st.st_mode & 0o777)
        os.utime(tmp, (st.st_atime, st.st_mtime))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    path.unlink()
    fsync_dir(path.parent)
    return st.st_size - target.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def execute_cleanup(settings: Settings, plan: CleanupPlan) -> CleanupPlan:
    """Carry out ``plan``; ``plan.freed`` becomes the bytes actually freed on disk."""
    import sqlalchemy as sa

    from testviper.history import schema

    run_ids = [e.what for e in plan.of("history")]
    if run_ids:
        history = _open(settings)
        try:
            with history.begin() as conn:
                for start in range(0, len(run_ids), 500):
                    chunk = run_ids[start : start + 500]
                    conn.execute(sa.delete(schema.runs).where(schema.runs.c.id.in_(chunk)))
        finally:
            history.engine.dispose()
    for entry in plan.entries:
        if entry.path is None:
            continue
        if not _inside(entry.path, plan.state):  # checked again: the tree may have changed
            raise UserError(f"{entry.path}: outside the state directory; not touched")
        if entry.kind == "report":
            if entry.path.is_file():
                plan.freed += _gzip(entry.path)
        elif entry.path.exists() or entry.path.is_symlink():
            plan.freed += _tree_size(entry.path)
            _remove(entry.path)
    return plan


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def format_entry(entry: Entry) -> str:
    return f"  {entry.kind:<9} {entry.what}  {size_text(entry.size)}  ({entry.detail})"


def format_totals(plan: CleanupPlan, dry_run: bool) -> str:
    files = [e for e in plan.entries if e.kind in ("run-dir", "leftover")]
    file_bytes = sum(e.size for e in files)
    reports = plan.of("report")
    history = plan.of("history")
    if dry_run:
        return (
            f"dry run: would remove {len(files)} paths ({size_text(file_bytes)}), "
            f"{len(history)} history runs, and gzip {len(reports)} reports "
            f"({size_text(sum(e.size for e in reports))}); nothing was changed"
        )
    return (
        f"removed {len(files)} paths and {len(history)} history runs, gzipped "
        f"{len(reports)} reports; freed {size_text(plan.freed)} on disk"
    )
