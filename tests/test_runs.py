"""`run`, `runs`, `runs.show` end to end in a real git repository."""

import sqlite3
from pathlib import Path

from conftest import Cli, clean_env, git, write_files


def last_run(root: Path) -> sqlite3.Row:
    con = sqlite3.connect(root / ".testviper" / "history.sqlite")
    con.row_factory = sqlite3.Row
    return con.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()


def test_run_records_git_state_and_ci_allow_list(project: Path, cli: Cli) -> None:
    """Commit, branch and dirty flag come from git; only allow-listed CI variables are kept."""
    git(project, "init", "-q", "-b", "feature/x")
    (project / ".gitignore").write_text(".testviper/\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "init")
    env = clean_env(CI="true", GITHUB_RUN_ID="42", GITHUB_TOKEN="ghp_secret_value_123")
    done = cli("run", cwd=project, env=env)
    assert done.returncode == 0, done.stderr
    row = last_run(project)
    assert row["git_commit"] == git(project, "rev-parse", "HEAD")
    assert (row["git_branch"], row["git_dirty"]) == ("feature/x", 0)
    assert "42" in row["ci"] and "ghp_secret" not in row["ci"]
    (project / "src" / "calc" / "arith.py").write_text("def add(a, b):\n    return a + b\n")
    cli("run", cwd=project)
    assert last_run(project)["git_dirty"] == 1


def test_runs_list_and_show(project: Path, cli: Cli) -> None:
    """`runs` lists runs newest first; `runs.show` by prefix shows failures and components."""
    write_files(project, {"tests/arith/test_bad.py": "def test_bad():\n    assert 1 == 2\n"})
    first = cli("run", cwd=project)
    assert first.returncode == 1
    (project / "tests" / "arith" / "test_bad.py").unlink()
    assert cli("run", cwd=project).returncode == 0
    listed = cli("runs", cwd=project).stdout.splitlines()
    assert len(listed) == 3 and listed[0].startswith("run id")
    newest, oldest = listed[1].split()[0], listed[2].split()[0]
    assert newest > oldest  # UUIDv7 ids sort by time
    shown = cli("runs.show", oldest[:13], cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "FAILED   tests/arith/test_bad.py::test_bad" in shown.stdout
    assert "assert 1 == 2" in shown.stdout
    assert "arith" in shown.stdout and "text" in shown.stdout
    assert newest in cli("runs.show", "latest", cwd=project).stdout
    missing = cli("runs.show", "ffff", cwd=project)
    assert missing.returncode == 2 and "no run matches 'ffff'" in missing.stderr


def test_runs_on_a_new_project_says_so(project: Path, cli: Cli) -> None:
    """Before the first run, `runs` explains how to record one instead of printing nothing."""
    done = cli("runs", cwd=project)
    assert done.returncode == 0
    assert "no runs yet" in done.stdout
