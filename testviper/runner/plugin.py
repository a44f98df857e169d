"""The pytest plugin that writes the run journal.

Loaded only by ``inv run`` (``-p testviper.runner.plugin --testviper-journal=PATH``), never
through an entry point, so it stays out of every other pytest run on the machine.

One JSON object per line, flushed as each event happens: a crash or ``kill -9`` loses
at most the test in flight. Under xdist only the controller writes; workers attach
markers and parameters to their reports, which xdist forwards.

Events:
  session_start  run_id, time, pytest, args, rootdir
  test_start     nodeid, time
  test           nodeid, outcome, when, duration, start, stop, worker, location, and
                 when present: longrepr, log, stdout, stderr, markers, marker_values,
                 params, reruns
  session_finish exitstatus, time

``outcome`` is one of passed, failed, error (setup/teardown/collection), skipped,
xfailed, xpassed. This module imports only the standard library: it runs inside the
user's test process.

Reruns (pytest-rerunfailures, ``--reruns N`` or ``@pytest.mark.flaky``): a failed attempt
that will be retried is logged with ``outcome == "rerun"`` (each of its phases that
failed; its passing phases are logged as usual), and every attempt starts with its own
``test_start``. A test still writes one ``test`` event: outcome, when, longrepr and
duration are those of the last attempt (captured output too, which pytest accumulates
over the attempts), ``start`` is the first attempt's, and ``reruns`` counts the earlier
attempts (left out when there were none).
"""

import json
import os
import sys
import time
from typing import Any

import pytest

JOURNAL_OPTION = "--testviper-journal"
# One encoder for the session: json.dumps(..., default=str) builds a new one per call,
# which is most of the journal's cost on a suite of small tests.
_encode = json.JSONEncoder(default=str, ensure_ascii=False).encode
EXTRA = "testviper_extra"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testviper")
    group.addoption(
        JOURNAL_OPTION,
        dest="testviper_journal",
        default=None,
        metavar="PATH",
        help="append the TestViper run journal (JSON lines) to PATH",
    )


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("testviper_journal")
    if not path:
        return
    if hasattr(config, "workerinput"):
        config.pluginmanager.register(WorkerExtras(), "testviper-extras")
    else:
        config.pluginmanager.register(JournalWriter(path, config), "testviper-journal")


def _extras(item: pytest.Item) -> dict[str, Any]:
    """A test's markers (with their first arguments) and parameters."""
    extra: dict[str, Any] = {}
    found = list(item.iter_markers())
    if found:
        extra["markers"] = sorted({m.name for m in found})
        # The first argument of a marker (@pytest.mark.issue("PROJ-1")) becomes the
        # value of its ReportPortal attribute, as the official agent does it.
        values = {m.name: _text(m.args[0]) for m in reversed(found) if m.args}
        values.pop("parametrize", None)
        if values:
            extra["marker_values"] = values
    if callspec := getattr(item, "callspec", None):
        extra["params"] = {k: _text(v) for k, v in callspec.params.items()}
    return extra


class WorkerExtras:
    """On an xdist worker: a test's extras ride on its teardown report to the controller,
    whose journal writer has no items (a plain report attribute survives xdist's report
    serialisation, which the worker does in its own, later, logreport hook)."""

    def __init__(self) -> None:
        self.extras: dict[str, dict[str, Any]] = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        if extra := _extras(item):
            self.extras[item.nodeid] = extra

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown" and (extra := self.extras.pop(report.nodeid, None)):
            setattr(report, EXTRA, extra)


def _text(value: Any, limit: int = 200) -> str:
    """str() of a parameter or marker argument, as ReportPortal shows it, capped."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JournalWriter:
    """Collects each test's phase reports and writes one line when the test ends."""

    def __init__(self, path: str, config: pytest.Config) -> None:
        self.config = config
        # One unbuffered write(2) per event: it reaches the kernel at once, so killing
        # pytest cannot lose it, and O_APPEND keeps each line whole.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.pending: dict[str, dict[str, Any]] = {}
        # Tests whose current attempt ended in a rerun: their next report starts afresh.
        self.retrying: set[str] = set()
        # Pending tests whose current attempt got past setup: a call report came.
        self.called: set[str] = set()

    def write(self, event: dict[str, Any]) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, (_encode(event) + "\n").encode())
        except OSError as exc:
            # A full disk must not crash the user's test run: say so once and stop
            # journaling; the run is then stored as incomplete.
            print(f"\ntestviper: journal stopped: {exc}", file=sys.stderr, flush=True)
            os.close(self.fd)
            self.fd = -1

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.write(
            {
                "event": "session_start",
                "run_id": os.environ.get("TESTVIPER_RUN_ID"),
                "time": time.time(),
                "pytest": pytest.__version__,
                "args": list(self.config.invocation_params.args),
                "rootdir": str(self.config.rootpath),
            }
        )

    # Once per test, before its fixtures are torn down: markers a fixture or the test
    # added are there, and a test whose setup failed still gets here. Every test hook of
    # this class runs for each of thousands of tests, under coverage's tracer: each
    # Python call counts (three report wrappers cost 0.03 s on 2,000 tests).
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> None:
        if (extra := _extras(item)) and (entry := self.pending.get(item.nodeid)):
            entry.update(extra)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.write({"event": "test_start", "nodeid": nodeid, "time": time.time()})

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module that fails to import is an error; one skipped at import
        # (importorskip, skip(allow_module_level=True)) counts as skipped, as pytest does.
        if report.failed or report.skipped:
            now = time.time()
            self.write(
                {
                    "event": "test",
                    "nodeid": report.nodeid or "<collection>",
                    "outcome": "skipped" if report.skipped else "error",
                    "when": "collect",
                    "duration": 0.0,
                    "start": now,
                    "stop": now,
                    "longrepr": _longrepr(report),
                    "worker": _worker(report),
                }
            )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.pending.get(report.nodeid)
        if report.when == "setup" and report.nodeid in self.retrying:
            # The next attempt begins (its setup always comes first, and the retried
            # attempt's teardown, if logged, came before): only the last attempt counts.
            self.retrying.discard(report.nodeid)
            self.called.discard(report.nodeid)
            entry = self.pending[report.nodeid]
            for key in ("longrepr", "log", "stdout", "stderr"):
                entry.pop(key, None)
            entry.update(outcome="passed", when="call", duration=0.0, worker=_worker(report))
        if entry is None:
            entry = self.pending[report.nodeid] = {
                "event": "test",
                "nodeid": report.nodeid,
                "outcome": "passed",
                "when": "call",
                "duration": 0.0,
                "start": report.start,
                "stop": report.stop,
                "worker": _worker(report),
                "location": list(report.location),
            }
        extra = getattr(report, EXTRA, None)
        if extra:
            entry.update(extra)
        if report.when == "call":
            self.called.add(report.nodeid)
        entry["duration"] += report.duration
        entry["stop"] = report.stop
        outcome = report.outcome  # "passed" for most phases, without the helper's call
        if outcome != "passed" or hasattr(report, "wasxfail"):
            outcome = _phase_outcome(report)
        if report.outcome == "rerun" and report.nodeid not in self.retrying:
            # Counted once per attempt: a failed call and teardown are both "rerun".
            self.retrying.add(report.nodeid)
            entry["reruns"] = entry.get("reruns", 0) + 1
        # The first phase that did not pass decides the test's outcome; a teardown
        # error after a failure keeps "failed", as pytest's own summary does.
        if outcome != "passed" and entry["outcome"] == "passed":
            entry["outcome"] = outcome
            entry["when"] = report.when
            entry["longrepr"] = _longrepr(report)
        elif outcome == "xpassed":
            entry["outcome"] = outcome
        if report.sections:  # the caplog/capstdout properties are costly to ask blindly
            for key, text in (
                ("log", report.caplog),
                ("stdout", report.capstdout),
                ("stderr", report.capstderr),
            ):
                if text:
                    entry[key] = text
        if report.when == "teardown" and report.nodeid not in self.retrying:
            self.called.discard(report.nodeid)
            self.write(self.pending.pop(report.nodeid))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # Tests whose teardown never came (an interrupted session) count with what they
        # got to: a failed setup, or a call. One stopped in its call has no result, as
        # pytest counts it: it stays in flight (started, never finished).
        for nodeid, entry in self.pending.items():
            if entry["outcome"] != "passed" or nodeid in self.called:
                self.write(entry)
        self.pending.clear()
        self.retrying.clear()
        self.called.clear()
        self.write({"event": "session_finish", "exitstatus": int(exitstatus), "time": time.time()})

    def pytest_unconfigure(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def _phase_outcome(report: pytest.TestReport) -> str:
    if report.outcome == "rerun":  # a failure that pytest-rerunfailures retries
        return "failed" if report.when == "call" else "error"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.passed:
        return "passed"
    if report.skipped:
        return "skipped"
    return "failed" if report.when == "call" else "error"


def _longrepr(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    if report.longrepr is None:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])  # (file, line, "Skipped: reason")
    if getattr(report, "wasxfail", None):
        return f"{report.longreprtext}\nxfail reason: {report.wasxfail}".strip()
    return str(report.longrepr)


def _worker(report: Any) -> str | None:
    node = getattr(report, "node", None)
    gateway = getattr(node, "gateway", None)
    return getattr(gateway, "id", None) or getattr(report, "worker_id", None)
