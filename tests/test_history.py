"""The history store on real SQLite files: migrations, idempotent saves, locking."""

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from testviper.coverage_data import Counts, FileCoverage, from_ranges, to_ranges
from testviper.errors import UserError
from testviper.history import schema
from testviper.history.records import RunRecord, TestResult
from testviper.history.store import find_run, list_runs, open_history, save_run

V1_DUMP = Path(__file__).parent / "data" / "history_v1.sql"
V2_DUMP = Path(__file__).parent / "data" / "history_v2.sql"
V3_DUMP = Path(__file__).parent / "data" / "history_v3.sql"
LEGACY_RUN = "019a0000-0000-7000-8000-000000000001"


def columns(db: Path) -> dict[str, set[str]]:
    engine = sa.create_engine(f"sqlite:///{db}")
    inspector = sa.inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def expected_columns() -> dict[str, set[str]]:
    return {t.name: {c.name for c in t.columns} for t in schema.metadata.sorted_tables}


def version(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT max(version) FROM schema_info").fetchone()[0]


def sample_run(run_id: str = "019b0000-0000-7000-8000-000000000002") -> RunRecord:
    return RunRecord(
        id=run_id,
        project="p",
        status="complete",
        started_at=datetime(2026, 11, 1, 12, 0, 0),
        finished_at=datetime(2026, 11, 1, 12, 0, 30),
        command=["pytest"],
        run_dir="/tmp/r",
        exit_code=1,
        environment={"git_branch": "main", "git_commit": "abc", "ci": {"CI": "true"}},
        tests=[
            TestResult("t.py::a", "passed", "call", 0.1),
            TestResult(
                "t.py::b",
                "failed",
                "call",
                0.2,
                message="boom",
                markers=["slow"],
                params={"n": "1"},
            ),
        ],
        files=[FileCoverage("src/m.py", Counts(10, 2, 4, 3), 0, (1, 2, 3, 5), (7, 8))],
        components={"core": (1, Counts(10, 2, 4, 3))},
        coverage=Counts(10, 2, 4, 3),
    )


def test_empty_database_gets_current_schema(tmp_path: Path) -> None:
    """A new file is created with every table of the current schema, stamped current."""
    db = tmp_path / "sub" / "h.sqlite"
    open_history(f"sqlite:///{db}")
    assert columns(db) == expected_columns()
    assert version(db) == schema.SCHEMA_VERSION


def test_previous_version_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A v1 database (frozen dump) reaches the current schema with its run intact."""
    db = tmp_path / "h.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(V1_DUMP.read_text())
    assert "label" not in columns(db)["runs"]
    history = open_history(f"sqlite:///{db}")
    assert columns(db) == expected_columns()
    assert version(db) == schema.SCHEMA_VERSION
    legacy = find_run(history, "019a")
    assert (legacy.project, legacy.failed, legacy.label) == ("legacy", 1, None)
    save_run(history, sample_run())  # new columns and tables are writable
    assert [r.id for r in list_runs(history)] == [sample_run().id, LEGACY_RUN]
    open_history(f"sqlite:///{db}")  # opening again is a no-op
    assert version(db) == schema.SCHEMA_VERSION


def test_version_2_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A v2 database (frozen dump) gains the key rotation log; its labelled run is intact."""
    db = tmp_path / "h.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(V2_DUMP.read_text())
    assert version(db) == 2
    assert "key_rotations" not in columns(db)
    history = open_history(f"sqlite:///{db}")
    assert columns(db) == expected_columns()
    assert version(db) == schema.SCHEMA_VERSION
    legacy = find_run(history, "019b")
    assert (legacy.project, legacy.label, legacy.failed) == ("legacy2", "xradio", 1)
    with history.begin() as conn:
        conn.execute(
            schema.key_rotations.insert().values(
                instance="main",
                variable="RP_API_KEY",
                rotated_at=datetime(2026, 11, 1),
                fingerprint="abc123",
                overlap=True,
                old_key="kept",
            )
        )


def test_version_3_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A v3 database (frozen dump) gains tests.reruns, NOT NULL with 0 for its old rows."""
    db = tmp_path / "h.sqlite"
    with sqlite3.connect(db) as con:
        con.executescript(V3_DUMP.read_text())
    assert version(db) == 3
    assert "reruns" not in columns(db)["tests"]
    history = open_history(f"sqlite:///{db}")
    assert columns(db) == expected_columns()
    assert version(db) == schema.SCHEMA_VERSION
    with sqlite3.connect(db) as con:
        old = con.execute("SELECT nodeid, outcome, reruns FROM tests ORDER BY id").fetchall()
        notnull = {row[1]: row[3] for row in con.execute("PRAGMA table_info(tests)")}
    assert old == [("t.py::a", "passed", 0), ("t.py::b", "failed", 0)]
    assert notnull["reruns"] == 1
    run = sample_run()
    run.tests[0].reruns = 2
    save_run(history, run)
    with sqlite3.connect(db) as con:
        stored = con.execute(
            "SELECT reruns FROM tests WHERE run_id = ? ORDER BY id", (run.id,)
        ).fetchall()
    assert stored == [(2,), (0,)]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer TestViper is not touched: clear error instead."""
    db = tmp_path / "h.sqlite"
    open_history(f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO schema_info(version) VALUES (99)")
    with pytest.raises(UserError, match="version 99 is newer"):
        open_history(f"sqlite:///{db}")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    """WAL journal and enforced foreign keys: deleting a run removes its rows."""
    db = tmp_path / "h.sqlite"
    history = open_history(f"sqlite:///{db}")
    save_run(history, sample_run())
    with history.engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        conn.execute(sa.delete(schema.runs))
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.tests)).scalar() == 0


def test_saving_a_run_twice_replaces_it(tmp_path: Path) -> None:
    """Re-ingesting a run directory never duplicates tests or coverage rows."""
    history = open_history(f"sqlite:///{tmp_path / 'h.sqlite'}")
    save_run(history, sample_run())
    save_run(history, sample_run())
    with history.engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(schema.tests)).scalar()
        row = conn.execute(sa.select(schema.runs)).one()
        fc = conn.execute(sa.select(schema.file_coverage)).one()
    assert count == 2
    assert (row.passed, row.failed, row.tests_total) == (1, 1, 2)
    assert row.cov_percent == pytest.approx(100 * (8 + 3) / 14)
    assert row.ci == {"CI": "true"}
    assert (fc.executed_lines, fc.missing_lines) == ("1-3,5", "7-8")


def test_find_run_by_prefix(tmp_path: Path) -> None:
    """Prefixes pick one run, 'latest' the newest; unknown and ambiguous ones are errors."""
    history = open_history(f"sqlite:///{tmp_path / 'h.sqlite'}")
    save_run(history, sample_run("019b0000-0000-7000-8000-00000000000a"))
    save_run(history, sample_run("019b0000-0000-7000-8000-00000000000b"))
    assert find_run(history, "latest").id.endswith("b")
    assert find_run(history, "019b0000-0000-7000-8000-00000000000a").id.endswith("a")
    with pytest.raises(UserError, match="several runs"):
        find_run(history, "019b")
    with pytest.raises(UserError, match="no run matches"):
        find_run(history, "ffff")


def test_locked_database_is_a_clear_error(tmp_path: Path) -> None:
    """Another writer holding the lock past busy_timeout gives a UserError, not a hang."""
    db = tmp_path / "h.sqlite"
    open_history(f"sqlite:///{db}")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        history = open_history(f"sqlite:///{db}", busy_timeout=0.2)
    except UserError as exc:  # the migration check may already meet the lock
        assert "locked" in str(exc)
    else:
        with pytest.raises(UserError, match="locked by another writer"):
            save_run(history, sample_run())
    finally:
        holder.rollback()
        holder.close()


def test_bad_url_is_a_user_error() -> None:
    """A history.url that is not a URL names the field."""
    with pytest.raises(UserError, match=r"history\.url"):
        open_history("not a url")


@pytest.mark.parametrize("lines", [[], [1], [1, 2, 3, 7], [3, 5, 6, 7, 10, 12, 13]])
def test_line_ranges_round_trip(lines: list[int]) -> None:
    """Line numbers survive compression into ranges."""
    assert from_ranges(to_ranges(lines)) == lines
