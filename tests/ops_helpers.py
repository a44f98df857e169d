"""Helpers for the backup/restore and cleanup tests: real history rows, tree hashes."""

import hashlib
import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

from testviper.coverage_data import Counts, FileCoverage
from testviper.history.records import RunRecord, TestResult
from testviper.history.store import History, open_history, save_run
from testviper.ids import new_run_id

TABLES = ("runs", "tests", "file_coverage", "component_coverage", "schema_info")


def make_run(started: datetime, n_tests: int = 3, run_id: str | None = None) -> RunRecord:
    """A run with ``n_tests`` tests (one failing) and two files of coverage."""
    ns = int(started.replace(tzinfo=UTC).timestamp() * 1e9)
    return RunRecord(
        id=run_id or new_run_id(ns),
        project="calc",
        status="complete",
        started_at=started,
        finished_at=started,
        command=["pytest"],
        run_dir="/nowhere",
        exit_code=1,
        environment={"git_branch": "main"},
        tests=[
            TestResult(f"t.py::test_{i}", "failed" if i == 0 else "passed", "call", 0.1 * i)
            for i in range(n_tests)
        ],
        files=[
            FileCoverage(f"src/m{i}.py", Counts(10, 2, 4, 3), 0, (1, 2, 3), (7, 8))
            for i in range(2)
        ],
        components={"arith": (1, Counts(10, 2, 4, 3))},
        coverage=Counts(20, 4, 8, 6),
    )


def fill_history(db: Path, starts: list[datetime], n_tests: int = 3) -> list[str]:
    """Store one run per start time in the SQLite history at ``db``; their ids."""
    history = open_history(f"sqlite:///{db}")
    ids = []
    try:
        for started in starts:
            run = make_run(started, n_tests)
            save_run(history, run)
            ids.append(run.id)
    finally:
        history.engine.dispose()
    return ids


def connect(db: Path) -> History:
    return open_history(f"sqlite:///{db}")


def dump(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the history's tables, sorted: equal dumps mean equal databases."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        con.close()


def tree_hash(root: Path, skip_db_journals: bool = False) -> dict[str, tuple[str, int, str]]:
    """Every path under ``root``: type, mode and content hash (symlinks: their target)."""
    found: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if skip_db_journals and name.endswith(("-wal", "-shm")):
                continue
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
    return found
