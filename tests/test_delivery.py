"""ReportPortal delivery end to end: real `testviper` runs, the test RP server, real SQLite."""

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, Cli, clean_env, run_cli, write_files
from rp_server import RPServer

from testviper import config as config_module
from testviper.config import Instance
from testviper.reporter.deliver import deliver
from testviper.reporter.launch import STATUS, derived_uuid
from testviper.reporter.masking import Masker

KEY_A, KEY_B = "key-a-5f0c1d9e8b7a", "key-b-42a9e7c3d1f0"
MORE_TESTS = {
    "tests/text/test_more.py": """
        import logging
        import os

        import pytest


        @pytest.mark.parametrize("word", ["a", "b"])
        def test_param(word):
            assert word


        def test_fails():
            if os.environ.get("LEAK_KEY"):
                # The key variable itself is withheld from the tests; a copy of its
                # value under another name is what a careless test could still log.
                assert "RP_KEY_A" not in os.environ
                logging.getLogger("x").warning("using %s", os.environ["LEAK_KEY"])
            logging.getLogger("x").warning("header Authorization: Bearer abc.def-123")
            assert 1 == 2, "wrong"


        @pytest.mark.skip(reason="later")
        def test_skipped():
            pass
    """,
}


def instance(name: str, rp: RPServer, env: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoint": rp.url, "project": "proj", "api_key_env": env, **extra}


def configure(root: Path, *instances: dict[str, Any], **reportportal: Any) -> None:
    """Set the config's ``reportportal`` section: these instances and other settings."""
    path = root / "testviper.yaml"
    data = yaml.safe_load(path.read_text())
    data["reportportal"] = {"instances": list(instances), **reportportal}
    path.write_text(yaml.safe_dump(data))


def env(**extra: str) -> dict[str, str]:
    return clean_env(AGENT_NO_ANALYTICS="1", **extra)


def state(root: Path) -> Path:
    return root / ".testviper"


def db(root: Path) -> sqlite3.Connection:
    con = sqlite3.connect(state(root) / "history.sqlite")
    con.row_factory = sqlite3.Row
    return con


def only_run(root: Path) -> tuple[str, list[dict]]:
    (run_dir,) = (state(root) / "runs").iterdir()
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return run_dir.name, [e for e in map(json.loads, lines) if e["event"] == "test"]


def delivery_row(root: Path, name: str) -> sqlite3.Row:
    (row,) = db(root).execute("SELECT * FROM deliveries WHERE instance = ?", (name,)).fetchall()
    return row


def outbox_files(root: Path) -> list[Path]:
    return sorted((state(root) / "outbox").rglob("*.json"))


def assert_complete(rp: RPServer, run_id: str, name: str, tests: list[dict]) -> None:
    """One finished launch holding each journal test exactly once, at its status."""
    launch = rp.launch(derived_uuid(run_id, name, "launch"))
    assert launch.status != "IN_PROGRESS" and launch.end_time is not None
    leaves = rp.leaves(launch.uuid)
    assert len(leaves) == len(tests)
    by_uuid = {leaf.uuid: leaf for leaf in leaves}
    for test in tests:
        leaf = by_uuid[derived_uuid(run_id, name, "test", test["nodeid"], "0")]
        assert leaf.status == STATUS[test["outcome"]], test["nodeid"]
    items = rp.items(launch.uuid)
    assert all(i.finished for i in items)
    assert len({i.uuid for i in items}) == len(items) == rp.count("start_item")


# `inv run` streams by default; `--no-live` delivers after the tests. Both must hold.
MODES = pytest.mark.parametrize("mode", [[], ["--no-live"]], ids=["live", "after-run"])


@MODES
def test_run_delivers_to_two_instances_and_keeps_secrets(
    project: Path, cli: Cli, mode: list[str]
) -> None:
    """2 complete launches with the journal's statuses, coverage equal to history; no key
    anywhere but the Authorization header."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_B,)) as b:
        configure(
            project,
            instance("a", a, "RP_KEY_A", launch={"name": "calc-ci", "attributes": {"team": "qa"}}),
            instance("b", b, "RP_KEY_B"),
        )
        done = cli("run", *mode, cwd=project, env=env(RP_KEY_A=KEY_A, RP_KEY_B=KEY_B))
        assert done.returncode == 1, done.stderr  # pytest's: test_fails fails
        run_id, tests = only_run(project)
        assert len(tests) == 7
        for name, rp in (("a", a), ("b", b)):
            assert_complete(rp, run_id, name, tests)
            assert f"delivered to {name}: launch {rp.launch().uuid} (7 tests)" in done.stdout
            rp.assert_clean()
            assert delivery_row(project, name)["status"] == "delivered"
        con = db(project)
        run = con.execute("SELECT * FROM runs").fetchone()
        expected = {"coverage:total": f"{run['cov_percent']:.2f}"}
        for comp in con.execute("SELECT component, percent FROM component_coverage"):
            expected[f"coverage:{comp['component']}"] = f"{comp['percent']:.2f}"
        assert len(expected) == 3
        attrs = {x.get("key"): x["value"] for x in a.launch().attributes}
        assert {k: attrs[k] for k in expected} == expected
        assert (attrs["team"], attrs["run"], a.launch().name) == ("qa", run_id, "calc-ci")
        assert {x.get("key"): x["value"] for x in b.launch().attributes}["coverage:total"] == (
            expected["coverage:total"]
        )
        fails = next(leaf for leaf in a.leaves() if leaf.name == "test_fails")
        messages = [log.message for log in a.logs(item_uuid=fails.uuid)]
        assert any("wrong" in m for m in messages)
        assert any("Bearer ***" in m for m in messages)  # masked pattern
        assert not any("abc.def-123" in m for m in messages)
        skipped = next(leaf for leaf in a.leaves() if leaf.name == "test_skipped")
        assert skipped.issue is None  # no "To Investigate" for a skip
        for key, rp in ((KEY_A, a), (KEY_B, b)):
            assert rp.leaks(key) == []
    assert outbox_files(project) == []
    for key in (KEY_A, KEY_B):
        assert key not in done.stdout + done.stderr
        for path in state(project).rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path


@MODES
def test_down_instance_keeps_outbox_then_sync_completes(
    project: Path, cli: Cli, mode: list[str]
) -> None:
    """One instance down: the other gets everything, the exit code stays pytest's, the down
    one is pending in outbox and history; `sync` after it is back completes it once."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_B,)) as b:
        configure(project, instance("a", a, "RP_KEY_A"), instance("b", b, "RP_KEY_B", retries=1))
        b.stop()
        keys = env(RP_KEY_A=KEY_A, RP_KEY_B=KEY_B)
        paths = ["tests/arith", "tests/text/test_more.py"]
        done = cli("run", *mode, "--", *paths, cwd=project, env=keys)
        assert done.returncode == 1, done.stderr
        run_id, tests = only_run(project)
        assert_complete(a, run_id, "a", tests)
        assert "testviper: warning: delivery to b failed: cannot connect to" in done.stderr
        assert "kept in the outbox, `inv sync` retries" in done.stderr
        (pending,) = outbox_files(project)
        assert pending == state(project) / "outbox" / "b" / f"{run_id}.json"
        entry = json.loads(pending.read_text())
        assert (entry["status"], entry["attempts"]) == ("pending", 1)
        assert KEY_B not in pending.read_text() and KEY_A not in pending.read_text()
        row = delivery_row(project, "b")
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert "cannot connect" in row["last_error"]
        listed = cli("deliveries", cwd=project, env=keys)
        assert "pending" in listed.stdout and "cannot connect" in listed.stdout

        b.start()
        synced = cli("sync", cwd=project, env=keys)
        assert synced.returncode == 0, synced.stderr
        assert f"delivered run {run_id} to b" in synced.stdout
        assert_complete(b, run_id, "b", tests)
        b.assert_clean()
        assert a.count("start_launch") == 1  # a was not delivered again
        assert outbox_files(project) == []
        assert delivery_row(project, "b")["status"] == "delivered"
        again = cli("sync", cwd=project, env=keys)
        assert (again.returncode, again.stdout.strip()) == (0, "outbox empty: nothing to deliver")


def test_require_delivery_turns_failure_into_exit_1(project: Path, cli: Cli) -> None:
    """Passing tests, one instance down: exit 0 normally, 1 with --require-delivery."""
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=0))
        a.stop()
        plain = cli("run", cwd=project, env=env(RP_KEY_A=KEY_A))
        assert plain.returncode == 0, plain.stderr
        assert "delivery to a failed" in plain.stderr
        strict = cli("run", "--require-delivery", cwd=project, env=env(RP_KEY_A=KEY_A))
        assert strict.returncode == 1
        assert "delivery to a failed" in strict.stderr
        assert len(outbox_files(project)) == 2


@MODES
def test_interrupted_delivery_resumes_without_duplicates(
    project: Path, cli: Cli, mode: list[str]
) -> None:
    """Item finishes failing midway leave a half-delivered launch; `sync` completes it,
    starting nothing twice."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=0))
        a.fail_always(503, match="finish_item")
        keys = env(RP_KEY_A=KEY_A)
        done = cli("run", *mode, cwd=project, env=keys)
        assert "delivery to a failed: HTTP 503" in done.stderr
        run_id, tests = only_run(project)
        (pending,) = outbox_files(project)
        steps = json.loads(pending.read_text())["done"]
        assert "launch:start" in steps and "launch:finish" not in steps
        assert a.launch().status == "IN_PROGRESS"
        started = a.count("start_item")
        assert started == len(a.items())
        assert started > len(tests)  # suites and tests were started before the stop

        a.clear_faults()
        synced = cli("sync", "--instance", "a", cwd=project, env=keys)
        assert synced.returncode == 0, synced.stderr
        assert_complete(a, run_id, "a", tests)  # start_item count == items: none repeated
        assert a.count("start_launch") == 1
        a.assert_clean()
        assert outbox_files(project) == []
        assert delivery_row(project, "a")["attempts"] == 2


def test_killed_sync_replays_without_duplicates(project: Path, cli: Cli) -> None:
    """`sync` killed mid-delivery (progress not all saved): the next one resends what it
    must; the UUID checks turn the server's duplicate errors into success."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=2))
        a.stop()
        keys = env(RP_KEY_A=KEY_A)
        cli("run", cwd=project, env=keys)
        _, tests = only_run(project)
        a.start()
        a.set_latency(0.3, match="finish_item")
        proc = subprocess.Popen(
            [str(BIN / "testviper"), "sync"],
            cwd=project,
            env=keys,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert a.wait_until(lambda: a.count("finish_item") >= 1, timeout=30)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert a.launch().status == "IN_PROGRESS"
        assert len(outbox_files(project)) == 1
        a.set_latency(0)
        synced = cli("sync", cwd=project, env=keys)
        assert synced.returncode == 0, synced.stderr
        launch = a.launch()
        leaves = a.leaves(launch.uuid)
        assert len(leaves) == len({leaf.uuid for leaf in leaves}) == len(tests)
        assert {leaf.name: leaf.status for leaf in leaves}["test_fails"] == "FAILED"
        assert launch.status == "FAILED" and all(i.finished for i in a.items())
        assert a.violations == []
        # Refused only: resent starts (duplicate UUID, then found by the UUID check) and
        # requests whose body the kill cut off; nothing the replay sent was wrong.
        allowed = ("Unclassified error: duplicate item uuid", "should be a JSON object")
        refused = [e["message"] for e in a.errors]
        assert all(any(text in m for text in allowed) for m in refused), refused
        assert outbox_files(project) == []


@MODES
def test_rejected_key_is_reported_and_not_retried(project: Path, cli: Cli, mode: list[str]) -> None:
    """401: "API key rejected by instance a", one request per attempt (a stream rejected
    is not tried again after the tests), status failed."""
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=5))
        a.reject_key(KEY_A)
        keys = env(RP_KEY_A=KEY_A)
        done = cli("run", *mode, cwd=project, env=keys)
        assert done.returncode == 0
        assert "delivery to a failed: API key rejected by instance a (HTTP 401" in done.stderr
        assert a.count() == 1
        row = delivery_row(project, "a")
        assert (row["status"], row["attempts"]) == ("failed", 1)
        synced = cli("sync", cwd=project, env=keys)
        assert synced.returncode == 1
        assert "API key rejected by instance a" in synced.stderr
        assert a.count() == 2
        assert delivery_row(project, "a")["attempts"] == 2
        assert KEY_A not in done.stderr + synced.stderr


@pytest.mark.parametrize(
    ("endpoint", "keys", "message"),
    [
        (None, {}, "instance 'a': its API key variable RP_KEY_A is not set"),
        ("http://rp.example.org", {"RP_KEY_A": KEY_A}, "http:// is only allowed for loopback"),
    ],
    ids=["missing-key", "insecure-endpoint"],
)
def test_config_problems_stop_before_pytest(
    project: Path, cli: Cli, endpoint: str | None, keys: dict[str, str], message: str
) -> None:
    """Exit 2 with the reason, and no run directory: pytest never started."""
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, {**instance("a", a, "RP_KEY_A"), "endpoint": endpoint or a.url})
        done = cli("run", cwd=project, env=env(**keys))
        assert done.returncode == 2
        assert message in done.stderr
        assert not (state(project) / "runs").exists()
        assert a.count() == 0


def test_sync_unknown_instance_lists_configured_ones(project: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"), instance("b", a, "RP_KEY_B"))
        done = cli("sync", "--instance", "c", cwd=project, env=env())
        assert done.returncode == 2
        assert "--instance c: no such ReportPortal instance (configured: a, b)" in done.stderr


def test_no_deliver_needs_no_key_and_sends_nothing(project: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        done = cli("run", "--no-deliver", cwd=project, env=env())
        assert done.returncode == 0, done.stderr
        assert a.count() == 0 and outbox_files(project) == []


def test_secret_in_a_test_log_is_masked_before_it_leaves(project: Path, cli: Cli) -> None:
    """Tests cannot read the key variable; a key value they log reaches RP as ***."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        done = cli("run", cwd=project, env=env(RP_KEY_A=KEY_A, LEAK_KEY=KEY_A))
        assert "delivered to a" in done.stdout, done.stderr
        fails = next(leaf for leaf in a.leaves() if leaf.name == "test_fails")
        assert any("using ***" in log.message for log in a.logs(item_uuid=fails.uuid))
        assert a.leaks(KEY_A) == []


def test_masker_patterns() -> None:
    mask = Masker(["s3cr3t-value", "no", None])
    assert mask("a s3cr3t-value b") == "a *** b"
    assert mask("Authorization: Bearer eyJ.abc-1") == "Authorization: Bearer ***"
    assert mask("url?api_key=xyz&x=1 API-KEY: 'q'") == "url?api_key=***&x=1 API-KEY: '***'"
    assert mask("no change") == "no change"  # too short to be masked by value
    assert mask.attributes([{"key": "k", "value": "s3cr3t-value"}]) == [
        {"key": "k", "value": "***"}
    ]


# --------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One stored run (delivered to nobody) that in-process tests deliver themselves."""
    from conftest import PACKAGE

    root = tmp_path_factory.mktemp("delivery") / "proj"
    write_files(root, PACKAGE)
    done = run_cli("run", "--no-deliver", cwd=root, env=env())
    assert done.returncode == 0, done.stderr
    (run_dir,) = (state(root) / "runs").iterdir()
    return root, run_dir.name


def deliver_to(stored_run: tuple[Path, str], rp: RPServer, name: str, **kwargs: Any) -> Any:
    root, run_id = stored_run
    settings = config_module.load(root / "testviper.yaml")
    inst = Instance(name=name, endpoint=rp.url, project="proj", api_key_env="TV_TEST_KEY", **kwargs)
    settings.config.reportportal.instances = [inst]
    return deliver(settings, inst, run_id, state(root) / "runs" / run_id, deadline=20)


def test_transient_errors_are_retried(
    stored_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """503/502/429 on starts, finishes and logs: retried, delivered, nothing twice."""
    monkeypatch.setenv("TV_TEST_KEY", KEY_A)
    with RPServer(api_keys=(KEY_A,)) as rp:
        rp.fail_next(2, 503, match="start_launch")
        rp.fail_next(1, 502, match="start_item")
        rp.fail_next(1, 429, match="finish_item")
        result = deliver_to(stored_run, rp, "retry", retries=3)
        assert result.ok, result.error
        assert rp.count("start_launch") == 3
        assert len(rp.leaves()) == result.tests == 3
        assert rp.violations == []


def test_rejected_request_is_not_retried(
    stored_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400 is final: one request, status failed, the server's message kept."""
    monkeypatch.setenv("TV_TEST_KEY", KEY_A)
    with RPServer(api_keys=(KEY_A,)) as rp:
        rp.fail_next(None, 400, match="start_launch")
        result = deliver_to(stored_run, rp, "bad", retries=3)
        assert (result.status, rp.count("start_launch")) == ("failed", 1)
        assert "rejected the launch start: HTTP 400" in result.error


def test_hanging_server_hits_the_deadline(
    stored_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts and never answers cannot hold a delivery past its deadline."""
    monkeypatch.setenv("TV_TEST_KEY", KEY_A)
    with RPServer(api_keys=(KEY_A,)) as rp:
        rp.hang(seconds=60)
        root, run_id = stored_run
        settings = config_module.load(root / "testviper.yaml")
        inst = Instance(
            name="hang", endpoint=rp.url, project="proj", api_key_env="TV_TEST_KEY", timeout=0.5
        )
        inst.retries = 100
        result = deliver(settings, inst, run_id, state(root) / "runs" / run_id, deadline=2)
        rp.clear_faults()
        assert result.status == "pending"
        assert "within the delivery deadline (2 s)" in result.error


def test_entry_being_delivered_elsewhere_is_left_alone(
    stored_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sync` while `run` delivers the same entry: the second one skips it, sends nothing."""
    from testviper.reporter.outbox import entry_lock

    monkeypatch.setenv("TV_TEST_KEY", KEY_A)
    root, run_id = stored_run
    with RPServer(api_keys=(KEY_A,)) as rp, entry_lock(state(root), "busy", run_id) as mine:
        assert mine
        result = deliver_to(stored_run, rp, "busy")
        assert (result.status, rp.count()) == ("busy", 0)
    with RPServer(api_keys=(KEY_A,)) as rp:
        assert deliver_to(stored_run, rp, "busy").ok  # lock released: delivered


def test_connection_closed_while_idle_is_replaced() -> None:
    """A kept-alive connection the server dropped meanwhile (restart, idle timeout) costs
    no attempt: the request goes out again at once on a new connection."""
    from testviper.reporter.api import Api

    with RPServer(api_keys=(KEY_A,)) as rp:
        inst = Instance(name="a", endpoint=rp.url, project="proj", retries=0)
        api = Api(inst, KEY_A, 20, Masker())
        try:
            assert "subTypes" in api.call("GET", "/settings", "the settings")
            rp.stop()  # closes the idle connection the API kept
            rp.start()
            assert "subTypes" in api.call("GET", "/settings", "the settings")
            assert rp.count("settings") == 2
        finally:
            api.close()
