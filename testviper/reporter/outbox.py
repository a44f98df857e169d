"""What has not reached an instance yet: the outbox files and history's ``deliveries`` rows.

One file per run and instance, ``<state>/outbox/<instance>/<run_id>.json``, written
atomically as a delivery progresses. It holds the launch UUID, the status
(``pending`` = may succeed later, ``failed`` = rejected, needs a fix first), the number of
attempts, the last error, and the steps already done (launch start, each item's start
and finish, log batches, launch finish), so a replay resumes where the last attempt
stopped. The launch itself is rebuilt from the run's journal: the file stays small and
never holds test output. It never holds the API key either.

A delivered entry's file is removed; history keeps the record.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from testviper.fsutil import atomic_write

OUTBOX = "outbox"


@dataclass
class Entry:
    run_id: str
    instance: str
    launch_uuid: str
    status: str = "pending"  # pending | delivered | failed
    attempts: int = 0
    last_error: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    updated_at: str | None = None
    done: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        # Written every second of a delivery with tens of thousands of steps: no asdict()
        # (it deep-copies them), no sorting and no indent (json's C encoder is used only
        # without indent; the pure-Python one made these writes a sixth of sync's CPU).
        return json.dumps({**vars(self), "done": list(self.done)})


def outbox_dir(state_dir: Path, instance: str | None = None) -> Path:
    base = Path(state_dir) / OUTBOX
    return base / instance if instance else base


def entry_path(state_dir: Path, instance: str, run_id: str) -> Path:
    return outbox_dir(state_dir, instance) / f"{run_id}.json"


@contextmanager
def entry_lock(state_dir: Path, instance: str, run_id: str) -> Iterator[bool]:
    """Hold the entry's lock while delivering it; yields False if another process holds it.

    ``flock(2)``: the kernel releases it when its holder dies, so a killed delivery never
    blocks the next one.
    """
    import fcntl

    path = outbox_dir(state_dir, instance) / f".{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_entry(path: Path) -> Entry:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["done"] = set(data.get("done") or [])
    known = Entry.__dataclass_fields__
    return Entry(**{k: v for k, v in data.items() if k in known})


def save_entry(state_dir: Path, entry: Entry) -> None:
    path = entry_path(state_dir, entry.instance, entry.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry.updated_at = datetime.now(UTC).isoformat()
    atomic_write(path, entry.to_json())


def remove_entry(state_dir: Path, entry: Entry) -> None:
    entry_path(state_dir, entry.instance, entry.run_id).unlink(missing_ok=True)
    (outbox_dir(state_dir, entry.instance) / f".{entry.run_id}.lock").unlink(missing_ok=True)


def pending_entries(state_dir: Path, instance: str | None = None) -> list[tuple[Path, Entry]]:
    """Every outbox entry (of one instance), oldest run first; unreadable files are skipped."""
    base = outbox_dir(state_dir)
    if not base.is_dir():
        return []
    dirs = [base / instance] if instance else sorted(p for p in base.iterdir() if p.is_dir())
    found = []
    for directory in dirs:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                found.append((path, load_entry(path)))
            except (OSError, ValueError, TypeError):
                continue
    # Run ids are UUIDv7: sorting by id sorts by start time.
    return sorted(found, key=lambda pair: (pair[1].run_id, pair[1].instance))


def record(history: Any, entry: Entry) -> None:
    """Mirror an entry's state into history's ``deliveries`` table (one row per run+instance).

    A run missing from history (removed by retention) is not an error: the outbox file
    stays the record.
    """
    from testviper.history import schema

    table = schema.deliveries
    row = {
        "status": entry.status,
        "launch_uuid": entry.launch_uuid,
        "attempts": entry.attempts,
        "last_error": entry.last_error,
        "updated_at": datetime.now(UTC).replace(tzinfo=None),
    }
    where = sa.and_(table.c.run_id == entry.run_id, table.c.instance == entry.instance)
    for _ in range(2):  # a concurrent insert of the same row: update it instead
        try:
            with history.begin() as conn:
                if conn.execute(sa.update(table).where(where).values(**row)).rowcount:
                    return
                conn.execute(
                    table.insert().values(run_id=entry.run_id, instance=entry.instance, **row)
                )
                return
        except exc.IntegrityError:
            with history.engine.connect() as conn:
                exists = conn.execute(
                    sa.select(schema.runs.c.id).where(schema.runs.c.id == entry.run_id)
                ).first()
            if exists is None:
                return


def list_deliveries(history: Any, limit: int = 50) -> list[sa.Row]:
    """The most recent delivery rows, newest run first."""
    from testviper.history import schema

    table = schema.deliveries
    query = sa.select(table).order_by(table.c.run_id.desc(), table.c.instance).limit(limit)
    with history.engine.connect() as conn:
        return list(conn.execute(query))
