"""`inv cleanup`: retention of run directories, history rows and reports; leftovers."""

import gzip
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Cli, write_files
from ops_helpers import dump, fill_history, tree_hash

from testviper.config import load
from testviper.ids import new_run_id
from testviper.ops import cleanup
from testviper.ops.locks import job_lock

STATE = ".testviper"
RETENTION = """
retention:
  runs_days: 30
  runs_keep: 2
  run_dirs_days: 10
  reports_days: 20
"""
NOW = datetime.now(UTC)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def age(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()), follow_symlinks=False)


def run_dir(state: Path, started: datetime, files: dict[str, str] | None = None) -> Path:
    path = state / "runs" / new_run_id(int(started.timestamp() * 1e9))
    path.mkdir(parents=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def aged(project: Path, tmp_path: Path) -> dict[str, object]:
    """A state directory with things of every age, and traps outside it."""
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + RETENTION)
    state = project / STATE
    db = state / "history.sqlite"
    # five old runs and one recent: runs_keep 2 also keeps the newest old one (40 days)
    old = [ago(days=d) for d in (200, 150, 100, 60, 40)]
    ids = fill_history(db, [*old, ago(days=1)])
    outside = tmp_path / "outside"
    write_files(outside, {"keep.txt": "precious\n", "old.json": "{}\n"})
    age(outside / "old.json", ago(days=400))
    old_dir = run_dir(state, ago(days=45), {"journal.jsonl": "x" * 5000, "run.json": "{}"})
    new_dir = run_dir(state, ago(days=2), {"journal.jsonl": "y" * 100})
    empty_old = run_dir(state, ago(days=3))
    age(empty_old, ago(days=3))
    empty_new = run_dir(state, ago(hours=2))
    # a link named like an old run, pointing outside: never followed, never removed
    link_dir = state / "runs" / new_run_id(int(ago(days=90).timestamp() * 1e9))
    link_dir.symlink_to(outside, target_is_directory=True)
    reports = state / "reports"
    write_files(
        reports,
        {
            "tv_threshold_report_old.json": '{"ok": true}\n' * 50,
            "tv_threshold_report_new.json": '{"ok": true}\n',
            "html/old.html": "<p>old</p>\n" * 40,
        },
    )
    age(reports / "tv_threshold_report_old.json", ago(days=25))
    age(reports / "html" / "old.html", ago(days=90))
    (reports / "outside-link.json").symlink_to(outside / "old.json")
    tmp_old = state / ".history.sqlite.abc123.tmp"
    tmp_old.write_text("half")
    age(tmp_old, ago(hours=3))
    tmp_fresh = old_dir.parent / ".fresh.tmp"
    tmp_fresh.write_text("in flight")
    backup_work = state / "backups" / ".testviper-backup-x.tar.gz.abc.tmp"
    backup_work.mkdir(parents=True)
    (backup_work / "archive").write_bytes(b"z" * 300)
    age(backup_work, ago(days=2))
    return {
        "project": project,
        "state": state,
        "db": db,
        "ids": ids,
        "outside": outside,
        "old_dir": old_dir,
        "new_dir": new_dir,
        "empty_old": empty_old,
        "empty_new": empty_new,
        "link_dir": link_dir,
        "tmp_old": tmp_old,
        "tmp_fresh": tmp_fresh,
        "backup_work": backup_work,
    }


def entry_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("  ")]


def test_dry_run_and_real_run_agree_and_do_what_retention_says(aged: dict, cli: Cli) -> None:
    project, state, db = aged["project"], aged["state"], aged["db"]
    ids: list[str] = aged["ids"]
    outside_before = tree_hash(aged["outside"])
    rows_before = dump(db)
    tree_before = tree_hash(project, skip_db_journals=True)

    dry = cli("cleanup", "--dry-run", cwd=project)
    assert dry.returncode == 0, dry.stderr
    assert tree_hash(project, skip_db_journals=True) == tree_before
    assert dump(db) == rows_before
    planned = entry_lines(dry.stdout)
    assert "nothing was changed" in dry.stdout

    real = cli("cleanup", cwd=project)
    assert real.returncode == 0, real.stderr
    assert entry_lines(real.stdout) == planned

    # history: the four oldest go (older than 30 days, not among the newest 2)
    doomed, kept = ids[:4], ids[4:]
    for run_id in doomed:
        assert f"  history   {run_id}" in dry.stdout
    rows = dump(db)
    assert sorted(r[0] for r in rows["runs"]) == sorted(kept)
    for table in ("tests", "file_coverage", "component_coverage"):
        assert {r[1] if table == "tests" else r[0] for r in rows[table]} == set(kept), table
    # run directories
    assert not aged["old_dir"].exists() and not aged["empty_old"].exists()
    assert aged["new_dir"].is_dir() and aged["empty_new"].is_dir()
    assert aged["link_dir"].is_symlink()
    # reports: the old ones gzipped, same bytes inside, same mtime
    reports = state / "reports"
    assert not (reports / "tv_threshold_report_old.json").exists()
    packed = reports / "tv_threshold_report_old.json.gz"
    assert gzip.decompress(packed.read_bytes()) == b'{"ok": true}\n' * 50
    assert abs(packed.stat().st_mtime - ago(days=25).timestamp()) < 2
    assert (reports / "html" / "old.html.gz").is_file()
    assert (reports / "tv_threshold_report_new.json").is_file()
    assert (reports / "outside-link.json").is_symlink()
    # leftovers: the old temp file and the abandoned backup work directory go
    assert not aged["tmp_old"].exists() and not aged["backup_work"].exists()
    assert aged["tmp_fresh"].exists()
    # nothing outside the state directory was touched
    assert tree_hash(aged["outside"]) == outside_before
    assert "removed 4 paths and 4 history runs, gzipped 2 reports; freed" in real.stdout

    again = cli("cleanup", "--dry-run", cwd=project)
    assert entry_lines(again.stdout) == []


def test_plan_lists_every_item_with_its_size(aged: dict) -> None:
    """The library plan: kinds, sizes (a run directory's is the sum of its files)."""
    plan = cleanup.plan_cleanup(load(aged["project"] / "testviper.yaml"))
    by_path = {e.what: e for e in plan.entries}
    assert by_path[str(aged["old_dir"])].size == 5000 + 2
    assert by_path[str(aged["backup_work"])].size == 300
    assert by_path[str(aged["tmp_old"])].size == 4
    assert by_path[str(aged["empty_old"])].kind == "run-dir"
    history = plan.of("history")
    assert [e.what for e in history] == aged["ids"][:4]
    assert all(e.size > 0 and "3 test rows and 2 coverage rows" in e.detail for e in history)
    assert len(plan.of("report")) == 2


def test_runs_keep_wins_over_age(project: Path) -> None:
    """All runs are old, yet the newest runs_keep stay."""
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + RETENTION)
    db = project / STATE / "history.sqlite"
    ids = fill_history(db, [ago(days=d) for d in (90, 80, 70, 60)])
    settings = load(config)
    plan = cleanup.plan_cleanup(settings)
    cleanup.execute_cleanup(settings, plan)
    assert sorted(r[0] for r in dump(db)["runs"]) == sorted(ids[2:])


def test_cleanup_refuses_a_path_that_resolves_outside_the_state_dir(aged: dict) -> None:
    """A run directory swapped for a link after planning is not followed."""
    settings = load(aged["project"] / "testviper.yaml")
    plan = cleanup.plan_cleanup(settings)
    old_dir: Path = aged["old_dir"]
    subprocess.run(["rm", "-rf", str(old_dir)], check=True)
    old_dir.symlink_to(aged["outside"], target_is_directory=True)
    outside_before = tree_hash(aged["outside"])
    cleanup.execute_cleanup(settings, plan)
    assert tree_hash(aged["outside"]) == outside_before


def test_cleanup_while_another_holds_the_lock_exits_75(aged: dict, cli: Cli) -> None:
    project, state = aged["project"], aged["state"]
    before = tree_hash(project, skip_db_journals=True)
    with job_lock(state, "cleanup"):
        done = cli("cleanup", cwd=project)
    assert done.returncode == 75, done.stderr
    assert done.stderr.startswith("testviper: error: another cleanup run holds the lock (pid ")
    assert "Traceback" not in done.stderr
    after = tree_hash(project, skip_db_journals=True)
    # only the lock's own sidecar may differ
    assert {k: v for k, v in after.items() if "locks" not in k} == {
        k: v for k, v in before.items() if "locks" not in k
    }


def test_cleanup_without_a_state_dir_does_nothing(project: Path, cli: Cli) -> None:
    done = cli("cleanup", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "nothing to clean" in done.stdout
    assert not (project / STATE).exists()
    dry = cli("cleanup", "--dry-run", cwd=project)
    assert dry.returncode == 0 and not (project / STATE).exists()


def test_cleanup_with_a_bad_config_is_one_line_exit_2(project: Path, cli: Cli) -> None:
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "retention:\n  runs_keep: 0\n")
    done = cli("cleanup", cwd=project)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "retention.runs_keep" in done.stderr
