"""``inv run --live``: results reach ReportPortal while pytest runs, and the post-run
delivery completes the launch without sending anything twice."""

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import BIN, Cli, run_pytest_process, write_files
from rp_server import RPServer
from test_delivery import (
    KEY_A,
    KEY_B,
    MORE_TESTS,
    assert_complete,
    configure,
    delivery_row,
    env,
    instance,
    only_run,
    outbox_files,
    state,
)

from testviper import config as config_module
from testviper.config import Instance
from testviper.reporter import live
from testviper.reporter.deliver import LIVE_START, deliver
from testviper.reporter.launch import build_launch, derived_uuid
from testviper.runner.journal import iter_events

# test_second holds the session until the test (the outer one) creates the gate file,
# which it does once the server has test_first: proof that it went out live.
GATED = {
    "tests/gate/test_gate.py": """
        import os
        import time
        from pathlib import Path


        def test_first():
            pass


        def test_second():
            gate = Path(os.environ["LIVE_GATE"])
            deadline = time.monotonic() + 60
            while not gate.exists():
                assert time.monotonic() < deadline, "the server never saw test_first"
                time.sleep(0.02)


        def test_third():
            print("after the gate")
    """,
}
KEYS = {"RP_KEY_A": KEY_A, "RP_KEY_B": KEY_B}


def shape(nodes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A launch tree without its per-instance UUIDs."""
    fields = ("name", "type", "status", "codeRef", "testCaseId", "issue")
    return sorted((*(str(n[f]) for f in fields), *shape(n["children"])) for n in nodes)


def leaf_seen(rp: RPServer, name: str) -> bool:
    """The server has the test ``name`` started and finished."""
    if not rp.launches:
        return False
    return any(leaf.name == name and leaf.finished for leaf in rp.leaves())


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts itself; whatever is still alive is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def start_run(
    project: Path, procs: list[subprocess.Popen[bytes]], *args: str, **extra: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [str(BIN / "testviper"), "run", *args],
        cwd=project,
        env=env(**KEYS, LIVE_GATE=str(project / "gate"), **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    procs.append(proc)
    return proc


def open_gate(project: Path, proc: subprocess.Popen[bytes], rp: RPServer) -> None:
    """Let a run held at the gate go on; it must pass and leave a complete launch."""
    (project / "gate").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_id, tests = only_run(project)
    assert_complete(rp, run_id, "a", tests)
    rp.assert_clean()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_live_launch_equals_a_post_run_delivery(project: Path, cli: Cli, xdist: list[str]) -> None:
    """`--live` to a: one complete launch, nothing sent twice, coverage attributes added at
    the finish; the same run delivered afterwards to b gives the identical tree."""
    write_files(project, MORE_TESTS)
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_B,)) as b:
        configure(project, instance("a", a, "RP_KEY_A"))
        done = cli("run", "--live", "--", *xdist, cwd=project, env=env(**KEYS))
        assert done.returncode == 1, done.stderr  # pytest's: test_fails fails
        run_id, tests = only_run(project)
        assert_complete(a, run_id, "a", tests)  # each item started exactly once
        a.assert_clean()
        assert (a.count("start_launch"), a.count("finish_launch")) == (1, 1)
        assert f"delivered to a: launch {a.launch().uuid} (7 tests)" in done.stdout
        assert delivery_row(project, "a")["status"] == "delivered"
        assert outbox_files(project) == []
        assert a.leaks(KEY_A) == []
        keys = [x.get("key") for x in a.launch().attributes]
        assert len(keys) == len(set(keys))
        assert {"coverage:total", "coverage:arith", "coverage:text", "run"} <= set(keys)

        settings = config_module.load(project / "testviper.yaml")
        inst = Instance(name="b", endpoint=b.url, project="proj", api_key_env="RP_KEY_B")
        settings.config.reportportal.instances.append(inst)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RP_KEY_B", KEY_B)
            result = deliver(settings, inst, run_id, state(project) / "runs" / run_id)
        assert result.ok, result.error
        assert shape(a.tree()) == shape(b.tree())
        assert len(a.logs()) == len(b.logs())
        assert {x["key"]: x["value"] for x in a.launch().attributes if x.get("key")} == {
            x["key"]: x["value"] for x in b.launch().attributes if x.get("key")
        }


def test_stream_hands_over_the_launch_built_from_the_whole_journal(
    project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped at once, a stream still reads the journal to its end, sending nothing more:
    the launch it hands to the post-run delivery is the one the journal gives."""
    write_files(project, MORE_TESTS)
    # Output that makes the journal several times the stream's 64 KiB read.
    loud = "def test_loud():\n    print('x' * 400_000)\n    assert False\n"
    write_files(project, {"tests/text/test_loud.py": loud})
    assert cli("run", "--no-deliver", cwd=project, env=env()).returncode == 1
    run_id, tests = only_run(project)
    run_dir = state(project) / "runs" / run_id
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        settings = config_module.load(project / "testviper.yaml")
        monkeypatch.setenv("RP_KEY_A", KEY_A)
        handovers = live.start(settings, run_dir, run_id)()
    built = build_launch(run_id, "a", "calc", iter_events(run_dir / "journal.jsonl"))
    assert list(handovers) == ["a"] and handovers["a"].error is None
    handed = handovers["a"].launch
    assert handed is not None and handed.items == built.items
    assert (handed.uuid, handed.start, handed.end) == (built.uuid, built.start, built.end)
    assert len(handed.leaves) == len(tests) == 8
    assert (run_dir / "journal.jsonl").stat().st_size > 4 * 65536


STOPPED = {
    "tests/stop/test_stop.py": """
        import os
        import time
        from pathlib import Path


        def test_before():
            pass


        def test_stopped():
            Path(os.environ["LIVE_GATE"]).touch()
            time.sleep(60)


        def test_never():
            pass
    """,
}


@pytest.mark.parametrize(
    ("mode", "slow_git"),
    [([], False), (["--no-live"], False), ([], True)],
    ids=["live", "after-run", "runner-busy"],
)
def test_ctrl_c_stops_the_run_and_the_launch_is_interrupted(
    project: Path, started: list[subprocess.Popen[bytes]], mode: list[str], slow_git: bool
) -> None:
    """Ctrl-C (SIGINT to the terminal's process group) in the middle of a test: the exit
    code is pytest's 2, the test stopped in its call is in flight (no result, as pytest
    counts it), not passed, and the launch is finished INTERRUPTED with the tests that
    ran. runner-busy: the runner is still reading the git state (a `git` that takes 3 s)
    when Ctrl-C comes, and goes on all the same."""
    write_files(project, STOPPED)
    extra: dict[str, str] = {}
    if slow_git:
        bin_dir = project.parent / "slow-bin"
        bin_dir.mkdir()
        git = bin_dir / "git"
        git.write_text('#!/bin/sh\n[ "$2" = --abbrev-ref ] && sleep 3\nexit 1\n')
        git.chmod(0o755)
        extra["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        proc = start_run(project, started, *mode, "--", "tests/stop", **extra)
        gate = project / "gate"
        wait_for(gate.exists, "test_stopped running")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        stopped = "tests/stop/test_stop.py::test_stopped"
        assert f"in flight when pytest stopped: {stopped}" in out.decode()
        assert b"delivered to a:" in out
        run_id, tests = only_run(project)
        assert [(t["nodeid"], t["outcome"]) for t in tests] == [
            ("tests/stop/test_stop.py::test_before", "passed")
        ]
        assert_complete(a, run_id, "a", tests)
        assert a.launch().status == "INTERRUPTED"
        a.assert_clean()


def test_stopped_stream_leaves_a_retry_to_the_post_run_delivery(
    project: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest has exited while the launch start waits for its retry (503): the stream
    stops at once instead of retrying on for its grace time, so the post-run delivery
    is not kept waiting when ReportPortal is in trouble."""
    assert cli("run", "--no-deliver", cwd=project, env=env()).returncode == 0
    run_id, _ = only_run(project)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=10))
        a.fail_always(503, match="start_launch")
        monkeypatch.setenv("RP_KEY_A", KEY_A)
        settings = config_module.load(project / "testviper.yaml")
        stop = live.start(settings, state(project) / "runs" / run_id, run_id)
        assert a.wait_until(lambda: a.count("start_launch") >= 1, timeout=30)
        handovers = stop()
        sent = a.count("start_launch")
        assert sent <= 2  # 0.25 s, 0.5 s, 1 s ... would have come within the grace time
        time.sleep(0.6)
        assert a.count("start_launch") == sent
    assert handovers["a"].error is None  # not a failure for good: retried after the run
    assert handovers["a"].launch is not None


def test_tests_reach_the_server_before_pytest_ends(
    project: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """test_second waits for a file this test writes only once the server holds a
    finished test_first: the run passes only if results go out while pytest runs."""
    write_files(project, GATED)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        proc = start_run(project, started, "--live", "--", "tests/gate")
        wait_for(lambda: leaf_seen(a, "test_first"), "test_first on the server")
        assert proc.poll() is None and not leaf_seen(a, "test_third")
        entry = json.loads(next(iter(outbox_files(project))).read_text())
        assert LIVE_START in entry["done"]  # the live stream keeps its progress
        open_gate(project, proc, a)


# pytest_unconfigure comes after the journal's last line (session_finish): the session
# is over, but pytest has not exited until the test creates the gate file.
HELD_AT_EXIT = {
    "tests/held/conftest.py": """
        import os
        import time
        from pathlib import Path


        def pytest_unconfigure(config):
            gate = Path(os.environ["LIVE_GATE"])
            deadline = time.monotonic() + 60
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    """,
    "tests/held/test_held.py": """
        import logging


        def test_logs():
            logging.getLogger("held").warning("one last log")


        class TestGroup:
            def test_in_class(self):
                pass
    """,
}


def test_suites_are_finished_when_the_session_ends(
    project: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    """Once the session's last line is in the journal the stream sends the last log
    batch and finishes every suite, children first, while pytest is still exiting:
    only the launch finish, which needs the coverage, is left for after."""
    write_files(project, HELD_AT_EXIT)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        proc = start_run(project, started, "--live", "--", "tests/held")

        def suites_finished() -> bool:
            items = a.items() if a.launches else []
            suites = [i for i in items if i.type == "SUITE"]
            return len(items) == 6 and all(s.finished for s in suites)

        wait_for(suites_finished, "every suite finished")
        assert proc.poll() is None  # pytest is still held at its exit
        assert not a.launch().finished
        assert ["one last log" in log.message for log in a.logs()] == [True]
        open_gate(project, proc, a)


def test_run_streams_by_default(project: Path, started: list[subprocess.Popen[bytes]]) -> None:
    """A plain `inv run` with an instance configured streams: test_first is on the server
    while the session is still held."""
    write_files(project, GATED)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A"))
        proc = start_run(project, started, "--", "tests/gate")
        wait_for(lambda: leaf_seen(a, "test_first"), "test_first on the server")
        open_gate(project, proc, a)


@pytest.mark.parametrize(
    ("configured", "flags", "streamed"),
    [
        (None, [], True),
        (False, [], False),
        (None, ["--no-live"], False),
        (False, ["--live"], True),
    ],
)
def test_live_is_chosen_by_config_and_flags(
    project: Path, cli: Cli, configured: bool | None, flags: list[str], streamed: bool
) -> None:
    """`reportportal.live: false` or `--no-live` deliver after the tests: the launch starts
    with the coverage attributes. Streaming starts it before coverage is known."""
    with RPServer(api_keys=(KEY_A,)) as a:
        live_setting = {} if configured is None else {"live": configured}
        configure(project, instance("a", a, "RP_KEY_A"), **live_setting)
        done = cli("run", *flags, cwd=project, env=env(**KEYS))
        assert done.returncode == 0, done.stderr
        run_id, tests = only_run(project)
        assert_complete(a, run_id, "a", tests)
        (start,) = [r for r in a.requests if r.endpoint == "start_launch"]
        keys = {attr.get("key") for attr in json.loads(start.body)["attributes"]}
        assert ("coverage:total" not in keys) is streamed
        assert "coverage:total" in {attr.get("key") for attr in a.launch().attributes}


def test_live_and_no_live_together_are_refused(project: Path, cli: Cli) -> None:
    done = cli("run", "--live", "--no-live", cwd=project, env=env(**KEYS))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "testviper: error: --live and --no-live contradict each other: give one of them"
    )
    assert not state(project).joinpath("runs").exists()


def test_instance_down_mid_run_goes_to_the_outbox_then_sync(
    project: Path, started: list[subprocess.Popen[bytes]], cli: Cli
) -> None:
    """b goes down after test_first went out live: the tests and a are unaffected, b's
    entry waits in the outbox, and `sync` completes b's launch, nothing twice."""
    write_files(project, GATED)
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_B,)) as b:
        configure(project, instance("a", a, "RP_KEY_A"), instance("b", b, "RP_KEY_B", retries=1))
        proc = start_run(project, started, "--live", "--", "tests/gate")
        wait_for(lambda: leaf_seen(b, "test_first"), "test_first on b")
        b.stop()
        (project / "gate").touch()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert b"delivery to b failed: cannot connect to" in err
        run_id, tests = only_run(project)
        assert_complete(a, run_id, "a", tests)
        (pending,) = outbox_files(project)
        assert pending.parent.name == "b"
        assert delivery_row(project, "b")["status"] == "pending"

        b.start()
        synced = cli("sync", cwd=project, env=env(**KEYS))
        assert synced.returncode == 0, synced.stderr
        assert_complete(b, run_id, "b", tests)
        b.assert_clean()
        assert (b.count("start_launch"), a.count("start_launch")) == (1, 1)
        assert outbox_files(project) == []


def test_runner_killed_mid_live_is_completed_by_ingest_and_sync(
    project: Path, started: list[subprocess.Popen[bytes]], cli: Cli
) -> None:
    """kill -9 of `testviper run --live` while pytest runs on: the half-streamed launch
    stays in the outbox; `runs.ingest` then `sync` finish it, each test once."""
    write_files(project, GATED)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(project, instance("a", a, "RP_KEY_A", retries=1))
        proc = start_run(project, started, "--live", "--", "tests/gate")
        wait_for(lambda: leaf_seen(a, "test_first"), "test_first on the server")
        wait_for(lambda: bool(outbox_files(project)), "the live outbox entry")
        (child,) = run_pytest_process(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        (project / "gate").touch()  # pytest, orphaned, runs to its end
        try:
            child.wait(120)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        assert a.launch().status == "IN_PROGRESS"
        (run_dir,) = (state(project) / "runs").iterdir()
        keys = env(**KEYS)
        ingested = cli("runs.ingest", str(run_dir), cwd=project, env=keys)
        assert ingested.returncode == 0, ingested.stderr
        synced = cli("sync", cwd=project, env=keys)
        assert synced.returncode == 0, synced.stderr
        run_id, _ = only_run(project)
        launch = a.launch(derived_uuid(run_id, "a", "launch"))
        assert launch.status == "PASSED" and a.count("start_launch") == 1
        leaves = a.leaves(launch.uuid)
        assert sorted(leaf.name for leaf in leaves) == ["test_first", "test_second", "test_third"]
        assert all(i.finished for i in a.items()) and a.violations == []
        # Starts sent again because the kill came before their progress was saved are
        # refused as duplicates (then found by UUID): nothing else may be refused.
        refused = [e["message"] for e in a.errors]
        assert all("duplicate item uuid" in m for m in refused), refused
        assert "coverage:total" in {x.get("key") for x in launch.attributes}
        assert outbox_files(project) == []
