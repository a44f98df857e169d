"""Open the history database and read and write runs.

SQLite by default (one file in the state directory), any SQLAlchemy URL otherwise.
"""

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc

from testviper.coverage_data import to_ranges
from testviper.errors import UserError
from testviper.history import schema
from testviper.history.migrations import migrate
from testviper.history.records import RunRecord, only_run


@dataclass
class History:
    engine: sa.Engine
    where: str

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A write transaction; a lock held too long by another writer is a clear error."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except exc.OperationalError as error:
            raise _user_error(error, self.where) from None


def _user_error(error: exc.OperationalError, where: str) -> UserError:
    text = str(error.orig)
    if "locked" in text or "busy" in text:
        return UserError(
            f"{where}: the history database is locked by another writer and stayed locked "
            "beyond history.busy_timeout; wait for the other TestViper process or raise "
            "history.busy_timeout"
        )
    return UserError(f"{where}: history database error: {text}")


def _redact(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def open_history(url: str, busy_timeout: float = 10.0) -> History:
    """Connect to the history at ``url`` and migrate it to the current schema."""
    try:
        parsed = sa.make_url(url)
    except exc.ArgumentError:
        raise UserError(
            f"history.url: '{url}' is not a database URL (like sqlite:///path or "
            "postgresql://host/db)"
        ) from None
    where = _redact(parsed)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            db = Path(parsed.database)
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(
                    f"history.url: cannot create the directory for '{db}' ({error.strerror})"
                ) from None
            where = str(db)
        kwargs["connect_args"] = {"timeout": busy_timeout}
    try:
        engine = sa.create_engine(url, **kwargs)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        raise UserError(f"history.url: cannot use '{where}' ({error})") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    # SQLite merges its WAL back and deletes it only when the last connection closes,
    # and an exiting interpreter need not close pooled ones (`inv run` even skips the
    # final garbage collection): left open, the WAL outlives every process and grows.
    atexit.register(engine.dispose)
    history = History(engine, where)
    try:
        migrate(engine, where)
    except exc.OperationalError as error:
        raise _user_error(error, where) from None
    except exc.DatabaseError as error:
        raise UserError(f"{where}: not a usable history database ({error.orig})") from None
    return history


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # SQLite only: WAL lets readers (reports, gate) work while a run is being written,
    # and foreign keys are off by default in SQLite, unlike every server database.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def save_run(history: History, run: RunRecord) -> None:
    """Store a run with its tests and coverage; storing the same run again replaces it."""
    tally = run.counts()
    totals = run.coverage
    env = run.environment
    row = {
        "id": run.id,
        "project": run.project,
        "label": run.label,
        "status": run.status,
        "exit_code": run.exit_code,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration": (run.finished_at - run.started_at).total_seconds() if run.finished_at else None,
        "git_commit": env.get("git_commit"),
        "git_branch": env.get("git_branch"),
        "git_dirty": env.get("git_dirty"),
        "python": env.get("python"),
        "host": env.get("host"),
        "platform": env.get("platform"),
        "ci": env.get("ci"),
        "command": run.command,
        "run_dir": run.run_dir,
        "tests_total": len(run.tests),
        "passed": tally["passed"],
        "failed": tally["failed"],
        "errors": tally["error"],
        "skipped": tally["skipped"],
        "xfailed": tally["xfailed"],
        "xpassed": tally["xpassed"],
        "cov_statements": totals.statements if totals else None,
        "cov_missing": totals.missing if totals else None,
        "cov_branches": totals.branches if totals else None,
        "cov_covered_branches": totals.covered_branches if totals else None,
        "cov_percent": totals.percent if totals else None,
        "ingested_at": datetime.now(UTC).replace(tzinfo=None),
    }
    with history.begin() as conn:
        conn.execute(sa.delete(schema.runs).where(schema.runs.c.id == run.id))
        conn.execute(schema.runs.insert(), row)
        if run.tests:
            conn.execute(
                # vars(), not asdict(): asdict deep-copies and costs more than the insert.
                # No markers or parameters (most tests) is NULL: nothing to serialise.
                schema.tests.insert(),
                [
                    {
                        "run_id": run.id,
                        **vars(t),
                        "markers": t.markers or None,
                        "params": t.params or None,
                    }
                    for t in run.tests
                ],
            )
        if run.files:
            conn.execute(
                schema.file_coverage.insert(),
                [
                    {
                        "run_id": run.id,
                        "path": f.path,
                        "statements": f.counts.statements,
                        "missing": f.counts.missing,
                        "excluded": f.excluded,
                        "branches": f.counts.branches,
                        "covered_branches": f.counts.covered_branches,
                        "percent": f.counts.percent if f.counts.percent is not None else 100.0,
                        "executed_lines": to_ranges(f.executed_lines),
                        "missing_lines": to_ranges(f.missing_lines),
                    }
                    for f in run.files
                ],
            )
        if run.components:
            conn.execute(
                schema.component_coverage.insert(),
                [
                    {
                        "run_id": run.id,
                        "component": name,
                        "files": n_files,
                        "statements": c.statements,
                        "missing": c.missing,
                        "branches": c.branches,
                        "covered_branches": c.covered_branches,
                        "percent": c.percent,
                    }
                    for name, (n_files, c) in run.components.items()
                ],
            )


def list_runs(history: History, limit: int = 20) -> list[sa.Row]:
    """The most recent runs, newest first."""
    query = sa.select(schema.runs).order_by(schema.runs.c.id.desc()).limit(limit)
    with history.engine.connect() as conn:
        return list(conn.execute(query))


def find_run(history: History, id_prefix: str) -> sa.Row:
    """The run whose id starts with ``id_prefix`` ("latest" for the newest)."""
    runs = schema.runs
    if id_prefix == "latest":
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(1)
    else:
        query = sa.select(runs).where(runs.c.id.startswith(id_prefix, autoescape=True)).limit(2)
    with history.engine.connect() as conn:
        return only_run(list(conn.execute(query)), id_prefix)


def run_details(history: History, run_id: str) -> tuple[list[sa.Row], list[sa.Row]]:
    """A run's component coverage rows and its non-passing tests."""
    with history.engine.connect() as conn:
        components = list(
            conn.execute(
                sa.select(schema.component_coverage)
                .where(schema.component_coverage.c.run_id == run_id)
                .order_by(schema.component_coverage.c.component)
            )
        )
        problems = list(
            conn.execute(
                sa.select(schema.tests)
                .where(schema.tests.c.run_id == run_id)
                .where(schema.tests.c.outcome.in_(("failed", "error", "xpassed")))
                .order_by(schema.tests.c.id)
            )
        )
    return components, problems
