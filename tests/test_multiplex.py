"""Many requests over a few connections from one thread (``reporter.multiplex``), against
the test RP server: TLS, connections the server closes, late answers, an outage midway,
a log batch too large for one send. Each delivery must end complete, with nothing twice."""

import json
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_files
from rp_server import RPServer

from testviper import config as config_module
from testviper.config import Instance
from testviper.reporter.deliver import CONNECTIONS, DeliveryResult, _batches, deliver
from testviper.reporter.launch import build_launch, derived_uuid
from testviper.runner.journal import iter_events

KEY = "key-mux-3c9d1e7f5a2b"
TESTS = 3 * CONNECTIONS  # more tests than connections: each connection serves several
BIG = 12 * 1024 * 1024  # one log larger than a socket takes in one send
SUITE = {
    "pytest.ini": "[pytest]\ntestpaths = tests\n",
    "testviper.yaml": "project:\n  name: mux\n",
    "tests/test_many.py": f"""
import logging

import pytest


@pytest.mark.parametrize("n", range({TESTS}))
def test_n(n):
    assert n % 50 != 7, "every fiftieth fails"


def test_big_log():
    logging.getLogger("big").warning("x" * {BIG})
    assert False
""",
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict[str, Any]]]:
    """One real run, stored and delivered to nobody; the tests deliver it themselves."""
    root = tmp_path_factory.mktemp("mux")
    write_files(root, SUITE)
    done = run_cli("run", "--no-deliver", "--no-cov", cwd=root, env={"AGENT_NO_ANALYTICS": "1"})
    assert done.returncode == 1, done.stderr
    (run_dir,) = (root / ".testviper" / "runs").iterdir()
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    tests = [e for e in map(json.loads, lines) if e["event"] == "test"]
    assert len(tests) == TESTS + 1
    return root, run_dir.name, tests


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def send(
    stored: tuple[Path, str, list[dict[str, Any]]],
    rp: RPServer,
    monkeypatch: pytest.MonkeyPatch,
    **options: Any,
) -> DeliveryResult:
    root, run_id, _ = stored
    monkeypatch.setenv("TV_MUX_KEY", KEY)
    settings = config_module.load(root / "testviper.yaml", check_paths=False)
    inst = Instance(name="mux", endpoint=rp.url, project="proj", api_key_env="TV_MUX_KEY")
    for name, value in options.items():
        setattr(inst, name, value)
    settings.config.reportportal.instances = [inst]
    return deliver(settings, inst, run_id, root / ".testviper" / "runs" / run_id, deadline=60)


def log_batches(stored: tuple[Path, str, list[dict[str, Any]]]) -> int:
    root, run_id, _ = stored
    journal = root / ".testviper" / "runs" / run_id / "journal.jsonl"
    return len(list(_batches(build_launch(run_id, "mux", "mux", iter_events(journal)).items)))


def assert_whole(
    rp: RPServer, stored: tuple[Path, str, list[dict[str, Any]]], once: bool = False
) -> None:
    """One finished launch: every test once, at its status; every item started once and
    finished; the big log whole; nothing the server would have refused. ``once``: no
    request had to be sent again (none was late, none was lost to a closed connection)."""
    _, run_id, tests = stored
    launch = rp.launch(derived_uuid(run_id, "mux", "launch"))
    assert launch.end_time is not None
    leaves = {leaf.uuid: leaf for leaf in rp.leaves(launch.uuid)}
    assert len(leaves) == len(tests)
    failed = {t["nodeid"] for t in tests if t["outcome"] == "failed"}
    assert len(failed) == len([n for n in range(TESTS) if n % 50 == 7]) + 1
    for test in tests:
        leaf = leaves[derived_uuid(run_id, "mux", "test", test["nodeid"], "0")]
        assert leaf.status == ("FAILED" if test["nodeid"] in failed else "PASSED")
    items = rp.items(launch.uuid)
    assert all(item.finished for item in items)
    # Requests the server took (not the ones it failed or left unanswered on purpose).
    taken = [r for r in rp.requests if r.endpoint == "start_item" and not r.fault]
    assert len(taken) == len(items) == len({i.uuid for i in items})
    assert max(len(log.message or "") for log in rp.logs(launch.uuid)) >= BIG
    assert rp.violations == []
    if once:
        assert rp.count("start_item") == rp.count("finish_item") == len(items)
        assert rp.count("log_batch") == log_batches(stored)


def test_over_tls(stored: tuple, server_tls: ssl.SSLContext, monkeypatch) -> None:
    """Non-blocking TLS: records read as they come, bytes left inside the SSL object."""
    with RPServer(api_keys={KEY}, tls=server_tls) as rp:
        assert rp.url.startswith("https://")
        result = send(stored, rp, monkeypatch, verify_ssl=False)
        assert result.ok, result.error
        assert_whole(rp, stored, once=True)


def test_connections_the_server_closes_are_replaced(stored: tuple, monkeypatch) -> None:
    """A server that closes every connection after 3 answers (nginx does after 1000)."""
    with RPServer(api_keys={KEY}, keep_alive_max=3) as rp:
        result = send(stored, rp, monkeypatch)
        assert result.ok, result.error
        assert_whole(rp, stored, once=True)


def test_late_answers_are_retried_without_duplicates(stored: tuple, monkeypatch) -> None:
    """Answers later than the instance's timeout, to starts and finishes: the request is
    given up, the start looked up by UUID, and everything still ends up there once."""
    with RPServer(api_keys={KEY}) as rp:
        rp.hang(seconds=2, n=1, match="start_item")  # the first suite's
        rp.hang(seconds=2, n=3, match="finish_item")  # three tests'
        result = send(stored, rp, monkeypatch, timeout=0.5, retries=2)
        assert result.ok, result.error
        assert rp.count("get_item") >= 1  # a start whose answer was lost is looked up
        rp.clear_faults()
        assert_whole(rp, stored)


def test_an_outage_midway_leaves_the_rest_for_later(stored: tuple, monkeypatch) -> None:
    """Finishes failing for good: the delivery stops with the reason, the steps done are
    kept, and the next attempt completes the launch without sending anything twice."""
    with RPServer(api_keys={KEY}) as rp:
        rp.fail_always(503, match="finish_item")
        result = send(stored, rp, monkeypatch, retries=1)
        assert result.status == "pending", result.error
        assert "HTTP 503" in result.error
        started = rp.count("start_item")
        assert 0 < started < TESTS
        rp.clear_faults()
        result = send(stored, rp, monkeypatch)
        assert result.ok, result.error
        assert_whole(rp, stored)
