"""``testviper run`` closes the history when the run is stored."""

import sqlite3
from pathlib import Path

import pytest
from conftest import Cli

pytestmark = pytest.mark.slow


def test_a_run_leaves_no_sqlite_wal_behind(project: Path, cli: Cli) -> None:
    """SQLite checkpoints its WAL into the database and deletes it when the last
    connection closes. The runner exits without a final garbage collection, so unless it
    closes the history itself the WAL outlives it and grows with every run."""
    for _ in range(2):
        done = cli("run", "--no-deliver", cwd=project)
        assert done.returncode == 0, done.stdout + done.stderr
        state = project / ".testviper"
        assert not (state / "history.sqlite-wal").exists()
    with sqlite3.connect(state / "history.sqlite") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (2,)
