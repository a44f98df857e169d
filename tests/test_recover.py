"""history.import-rp end to end: deliver a real run to the test RP server, lose the
history, rebuild it from the launch, and import again without adding anything."""

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import Cli, write_files
from rp_server import RPServer
from test_delivery import KEY_A, MORE_TESTS, configure, db, env, instance, state

from testviper import config as config_module
from testviper.reporter import recover
from testviper.reporter.launch import STATUS

BACK = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped"}


def snapshot(con: sqlite3.Connection) -> dict:
    run = con.execute("SELECT * FROM runs").fetchone()
    return {
        "id": run["id"],
        "cov": round(run["cov_percent"], 2),
        "started": datetime.fromisoformat(run["started_at"]),
        "tests": dict(con.execute("SELECT nodeid, outcome FROM tests").fetchall()),
        "components": {
            name: round(pct, 2)
            for name, pct in con.execute("SELECT component, percent FROM component_coverage")
        },
    }


def wipe(root: Path) -> None:
    for path in state(root).glob("history.sqlite*"):
        path.unlink()


def test_import_rebuilds_the_delivered_run(
    project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as rp:
        configure(project, instance("a", rp, "RP_KEY_A"))
        done = cli("run", cwd=project, env=env(RP_KEY_A=KEY_A))
        assert done.returncode == 1, done.stderr  # test_fails fails
        assert "delivered to a" in done.stdout
        before = snapshot(db(project))
        assert len(before["tests"]) == 7 and len(before["components"]) == 2
        wipe(project)

        done = cli(
            "history.import-rp",
            "--instance",
            "a",
            "--since",
            "1d",
            cwd=project,
            env=env(RP_KEY_A=KEY_A),
        )
        assert done.returncode == 0, done.stderr
        assert "a: imported 1 runs (7 tests), skipped 0 already in history" in done.stdout
        assert "no per-file rows" in done.stdout
        con = db(project)
        after = snapshot(con)
        assert after["id"] == before["id"]
        assert after["cov"] == before["cov"]
        assert after["components"] == before["components"]
        # The launch starts with its first test, a moment after the run itself.
        assert 0 <= (after["started"] - before["started"]).total_seconds() < 30
        assert after["tests"] == {
            nodeid: BACK[STATUS[outcome]] for nodeid, outcome in before["tests"].items()
        }
        run = con.execute("SELECT * FROM runs").fetchone()
        assert (run["status"], run["exit_code"], run["tests_total"]) == ("complete", 1, 7)
        assert (run["passed"], run["failed"], run["skipped"]) == (5, 1, 1)
        assert con.execute("SELECT COUNT(*) FROM file_coverage").fetchone()[0] == 0
        (delivery,) = con.execute("SELECT instance, status, launch_uuid FROM deliveries")
        assert tuple(delivery) == ("a", "delivered", rp.launch().uuid)
        con.close()

        again = cli(
            "history.import-rp",
            "--instance",
            "a",
            "--since",
            "1d",
            cwd=project,
            env=env(RP_KEY_A=KEY_A),
        )
        assert again.returncode == 0, again.stderr
        assert "a: imported 0 runs (0 tests), skipped 1 already in history" in again.stdout
        con = db(project)
        assert snapshot(con) == after  # the same start: the launch's
        assert con.execute("SELECT COUNT(*) FROM tests").fetchone()[0] == 7
        con.close()

        # In process, one launch and two items per page: the paging finds everything.
        wipe(project)
        monkeypatch.setattr(recover, "PAGE_SIZE", 1)
        monkeypatch.setattr(recover, "ITEM_PAGE_SIZE", 2)
        monkeypatch.setenv("RP_KEY_A", KEY_A)
        settings = config_module.load(project / "testviper.yaml")
        (inst,) = settings.config.reportportal.instances
        result = recover.import_launches(settings, inst, timedelta(days=1))
        assert (result.imported, result.skipped, result.tests) == ([before["id"]], [], 7)
        assert snapshot(db(project)) == after
        item_pages = [r.path for r in rp.requests if r.endpoint == "list_items"]
        assert any("page.page=4" in p for p in item_pages)  # 7+ items in pages of 2
        rp.assert_clean()


def test_launches_outside_the_window_are_not_imported(
    project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RPServer(api_keys=(KEY_A,)) as rp:
        configure(project, instance("a", rp, "RP_KEY_A"))
        assert cli("run", cwd=project, env=env(RP_KEY_A=KEY_A)).returncode == 0
        wipe(project)
        monkeypatch.setenv("RP_KEY_A", KEY_A)
        settings = config_module.load(project / "testviper.yaml")
        (inst,) = settings.config.reportportal.instances
        later = datetime.now(UTC) + timedelta(days=31)  # the launch is 31 days old then
        result = recover.import_launches(settings, inst, timedelta(days=30), now=later)
        assert (result.imported, result.skipped) == ([], [])
        assert any("filter.gt.startTime" in r.path for r in rp.requests)
        result = recover.import_launches(settings, inst, timedelta(days=32), now=later)
        assert len(result.imported) == 1
        assert db(project).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instance", "a", "--since", "soon"], "--since: 'soon' is not a period"),
        (["--instance", "a", "--since", "0d"], "is not a period"),
        (["--instance", "nope"], "--instance nope: no such ReportPortal instance"),
        ([], "--instance is required"),
    ],
)
def test_bad_usage_exits_2(project: Path, cli: Cli, args: list[str], message: str) -> None:
    with RPServer(api_keys=(KEY_A,)) as rp:
        configure(project, instance("a", rp, "RP_KEY_A"))
        done = cli("history.import-rp", *args, cwd=project, env=env(RP_KEY_A=KEY_A))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert rp.count() == 0


def test_unreachable_instance_exits_1(project: Path, cli: Cli) -> None:
    rp = RPServer(api_keys=(KEY_A,))
    with rp:
        url = rp.url
    configure(
        project,
        {
            "name": "a",
            "endpoint": url,
            "project": "proj",
            "api_key_env": "RP_KEY_A",
            "retries": 0,
            "timeout": 2,
        },
    )
    done = cli("history.import-rp", "--instance", "a", cwd=project, env=env(RP_KEY_A=KEY_A))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "testviper: error: a: cannot connect" in done.stderr


@pytest.mark.parametrize(
    ("code_ref", "name", "expected"),
    [
        ("tests/test_m.py:test_f", "test_f", "tests/test_m.py::test_f"),
        ("tests/test_m.py:test_f", "test_f[a-1]", "tests/test_m.py::test_f[a-1]"),
        (
            "tests/p/test_m.py:TestA.TestB.test_f",
            "test_f",
            "tests/p/test_m.py::TestA::TestB::test_f",
        ),
        ("tests/test_broken.py", "test_broken.py", "tests/test_broken.py"),
        (None, "lonely", "lonely"),
    ],
)
def test_nodeid_from_code_ref(code_ref: str | None, name: str, expected: str) -> None:
    assert recover.nodeid(code_ref, name) == expected


def test_fallback_run_id_is_stable_and_sorts_by_start() -> None:
    early, late = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    launch = str(uuid.uuid4())
    first = recover.fallback_run_id(launch, early)
    assert first == recover.fallback_run_id(launch, early)
    assert first != recover.fallback_run_id(str(uuid.uuid4()), early)
    assert first < recover.fallback_run_id(launch, late)
    parsed = uuid.UUID(first)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
