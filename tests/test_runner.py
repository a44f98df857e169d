"""``testviper run`` end to end: real pytest subprocesses, real coverage, real SQLite.

Every test writes a small suite into the temporary ``project``, runs the installed
``testviper`` console script on it, then reads back the run directory (journal, run.json,
coverage data) and ``.testviper/history.sqlite`` with plain sqlite3.
"""

import contextlib
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import BIN, Cli, clean_env, run_pytest_process, write_files

from testviper.config import load

pytestmark = pytest.mark.slow

# Not anchored: after a kill the summary may follow pytest's unfinished progress line.
RUN_ID = re.compile(r"TestViper run (\S+) \(")
COVERAGE = [sys.executable, "-m", "coverage"]

# One module with every outcome the journal distinguishes.
MIXED = {
    "tests/test_mixed.py": """
        import logging

        import pytest


        @pytest.fixture
        def broken(request):
            request.node.add_marker("from_fixture")  # a marker added at run time
            raise RuntimeError("setup boom")


        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown boom")


        def test_pass():
            pass


        def test_fail():
            assert 1 == 2


        @pytest.mark.smoke("setup")
        def test_setup_error(broken):
            pass


        def test_teardown_error(bad_teardown):
            pass


        def test_fail_then_teardown_error(bad_teardown):
            assert 0, "call failed first"


        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass


        def test_skip_in_body():
            pytest.skip("decided at run time")


        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert 0


        @pytest.mark.xfail(reason="maybe fixed")
        def test_xpass():
            pass


        @pytest.mark.xfail(reason="must fail", strict=True)
        def test_xpass_strict():
            pass


        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_param(n):
            assert n


        class TestGroup:
            def test_method(self):
                pass


        @pytest.mark.smoke("fast")
        def test_marked():
            pass


        def test_logs():
            logging.getLogger("calc").warning("hello from the log")
    """,
}

M = "tests/test_mixed.py::"
# nodeid -> (outcome, phase) for the whole project: MIXED plus conftest's three tests.
MIXED_EXPECTED: dict[str, tuple[str, str]] = {
    "tests/arith/test_arith.py::test_add": ("passed", "call"),
    "tests/arith/test_arith.py::test_div": ("passed", "call"),
    "tests/text/test_text.py::test_shout": ("passed", "call"),
    M + "test_pass": ("passed", "call"),
    M + "test_fail": ("failed", "call"),
    M + "test_setup_error": ("error", "setup"),
    M + "test_teardown_error": ("error", "teardown"),
    M + "test_fail_then_teardown_error": ("failed", "call"),
    M + "test_skip": ("skipped", "setup"),
    M + "test_skip_in_body": ("skipped", "call"),
    M + "test_xfail": ("xfailed", "call"),
    M + "test_xpass": ("xpassed", "call"),
    M + "test_xpass_strict": ("failed", "call"),
    M + "test_param[1]": ("passed", "call"),
    M + "test_param[2]": ("passed", "call"),
    M + "test_param[3]": ("passed", "call"),
    M + "TestGroup::test_method": ("passed", "call"),
    M + "test_marked": ("passed", "call"),
    M + "test_logs": ("passed", "call"),
}

# Three tests finish, then test_block waits for a file that only the test creates.
BLOCKING = """
    import time
    from pathlib import Path

    from calc.arith import add

    RELEASE = Path(RELEASE_PATH)


    def test_one():
        assert add(1, 1) == 2


    def test_two():
        assert add(2, 2) == 4


    def test_three():
        assert add(3, 3) == 6


    def test_block():
        deadline = time.monotonic() + 60
        while not RELEASE.exists():
            assert time.monotonic() < deadline, "never released"
            time.sleep(0.02)


    def test_after():
        assert add(0, 0) == 0
"""
B = "tests/test_block.py::"
FINISHED_BEFORE_BLOCK = {B + "test_one", B + "test_two", B + "test_three"}


# ---------------------------------------------------------------- helpers


def run_id_of(done: subprocess.CompletedProcess[str]) -> str:
    """The run id from the summary ``testviper run`` prints."""
    match = RUN_ID.search(done.stdout)
    assert match, done.stdout + done.stderr
    return match.group(1)


def query(project: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the project's history file, as dicts."""
    con = sqlite3.connect(project / ".testviper" / "history.sqlite")
    con.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in con.execute(sql, params)]
    finally:
        con.close()


def run_row(project: Path, run_id: str) -> dict[str, Any]:
    rows = query(project, "SELECT * FROM runs WHERE id = ?", run_id)
    assert len(rows) == 1, rows
    return rows[0]


def stored_tests(project: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """The run's rows of the ``tests`` table by nodeid; a nodeid stored twice fails."""
    rows = query(project, "SELECT * FROM tests WHERE run_id = ? ORDER BY id", run_id)
    by_id = {row["nodeid"]: row for row in rows}
    assert len(by_id) == len(rows), Counter(r["nodeid"] for r in rows).most_common(3)
    for row in by_id.values():
        row["markers"] = json.loads(row["markers"]) if row["markers"] else []
        row["params"] = json.loads(row["params"]) if row["params"] else {}
    return by_id


def read_events(journal: Path) -> list[dict[str, Any]]:
    """Every line of a finished journal, each of which must be a JSON event object."""
    events = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(e, dict) and "event" in e for e in events)
    return events


def written_events(journal: Path) -> list[dict[str, Any]]:
    """The newline-terminated lines of a journal that pytest may still be writing."""
    if not journal.exists():
        return []
    text = journal.read_text(encoding="utf-8")
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def expected_counts(expected: dict[str, tuple[str, str]]) -> dict[str, int]:
    """The ``runs`` counter columns implied by nodeid -> (outcome, phase)."""
    tally = Counter(outcome for outcome, _ in expected.values())
    return {
        "tests_total": len(expected),
        "passed": tally["passed"],
        "failed": tally["failed"],
        "errors": tally["error"],
        "skipped": tally["skipped"],
        "xfailed": tally["xfailed"],
        "xpassed": tally["xpassed"],
    }


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition``; a guard against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited (a zombie waiting for its reaper counts)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def forget_history(project: Path) -> None:
    """Delete the history database, so only the run directory can bring a run back."""
    for db in (project / ".testviper").glob("history.sqlite*"):
        db.unlink()


def only_run_dir(project: Path) -> Path:
    dirs = [p for p in (project / ".testviper" / "runs").glob("*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def cov_total(data_file: Path, cwd: Path, include: list[str] | None = None) -> float:
    """What ``coverage report --format=total`` prints for ``data_file``."""
    args = [f"--include={','.join(include)}"] if include else []
    done = subprocess.run(
        [*COVERAGE, "report", f"--data-file={data_file}", *args, "--format=total", "--precision=4"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return float(done.stdout.strip())


def cov_json_totals(data_file: Path, cwd: Path, include: list[str], out: Path) -> dict[str, Any]:
    """``coverage json --include`` for ``data_file``: its totals and file count."""
    include_arg = ",".join(include)
    done = subprocess.run(
        [*COVERAGE, "json", f"--data-file={data_file}", f"--include={include_arg}", "-o", str(out)],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text(encoding="utf-8"))
    return {**data["totals"], "files": len(data["files"])}


class Runner:
    """A ``testviper run`` started in the background, in its own process group."""

    def __init__(self, project: Path, out_dir: Path, *args: str) -> None:
        self.stdout = out_dir / "runner.out"
        self.stderr = out_dir / "runner.err"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(BIN / "testviper"), "run", *args],
                cwd=project,
                env=clean_env(),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pytest: psutil.Process | None = None

    def find_pytest(self) -> psutil.Process:
        """The pytest process the runner started."""
        kids = run_pytest_process(self.proc.pid)
        assert len(kids) == 1, kids
        self.pytest = kids[0]
        return self.pytest

    def cleanup(self) -> None:
        """Kill whatever of this run is still alive (only processes this test started)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        if self.pytest is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                self.pytest.kill()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Runner]]:
    """Start ``testviper run ARGS`` without waiting; every process is killed at teardown."""
    started: list[Runner] = []

    def start(project: Path, *args: str) -> Runner:
        runner = Runner(project, tmp_path, *args)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.cleanup()


def blocking_project(project: Path, release: Path) -> None:
    write_files(
        project, {"tests/test_block.py": BLOCKING.replace("RELEASE_PATH", repr(str(release)))}
    )


def wait_for_block(project: Path, runner: Runner) -> Path:
    """Wait until the journal shows three finished tests and test_block started."""
    runs = project / ".testviper" / "runs"

    def blocked() -> bool:
        if runner.proc.poll() is not None:
            pytest.fail("testviper run ended early:\n" + runner.stdout.read_text(errors="replace"))
        journals = list(runs.glob("*/journal.jsonl"))
        if len(journals) != 1:
            return False
        events = written_events(journals[0])
        done = {e["nodeid"] for e in events if e["event"] == "test"}
        started = {e["nodeid"] for e in events if e["event"] == "test_start"}
        return done == FINISHED_BEFORE_BLOCK and B + "test_block" in started

    wait_until(blocked, "test_block to start")
    return only_run_dir(project)


# ---------------------------------------------------------------- 1. the journal


def test_journal_and_history_record_every_outcome(project: Path, cli: Cli) -> None:
    """Pass, fail, setup/teardown errors, skips, xfail/xpass/strict xpass, params, classes,
    markers and logs are each journalled once with the exact outcome, history matches,
    and ``testviper run`` exits with pytest's code."""
    write_files(project, MIXED)
    done = cli("run", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    run_id = run_id_of(done)
    row = run_row(project, run_id)
    events = read_events(Path(row["run_dir"]) / "journal.jsonl")

    assert events[0]["event"] == "session_start"
    assert events[0]["run_id"] == run_id
    assert events[-1]["event"] == "session_finish"
    assert events[-1]["exitstatus"] == 1
    assert [e["event"] for e in events[1:-1]].count("session_start") == 0
    assert [e["event"] for e in events[1:-1]].count("session_finish") == 0
    tests = [e for e in events if e["event"] == "test"]
    assert Counter(e["nodeid"] for e in tests) == Counter(MIXED_EXPECTED.keys())
    by_id = {e["nodeid"]: e for e in tests}
    assert {n: (e["outcome"], e["when"]) for n, e in by_id.items()} == MIXED_EXPECTED
    starts = [e["nodeid"] for e in events if e["event"] == "test_start"]
    assert Counter(starts) == Counter(MIXED_EXPECTED.keys())

    assert "setup boom" in by_id[M + "test_setup_error"]["longrepr"]
    assert "teardown boom" in by_id[M + "test_teardown_error"]["longrepr"]
    assert "call failed first" in by_id[M + "test_fail_then_teardown_error"]["longrepr"]
    assert "XPASS(strict)" in by_id[M + "test_xpass_strict"]["longrepr"]
    assert "not today" in by_id[M + "test_skip"]["longrepr"]
    assert by_id[M + "test_param[1]"]["params"] == {"n": "1"}
    assert by_id[M + "test_param[3]"]["params"] == {"n": "3"}
    assert "params" not in by_id[M + "test_pass"]  # empty fields are left out
    assert "smoke" in by_id[M + "test_marked"]["markers"]
    assert by_id[M + "test_marked"]["marker_values"] == {"smoke": "fast"}
    assert "marker_values" not in by_id[M + "test_param[1]"]  # parametrize is not a value
    assert "smoke" in by_id["tests/arith/test_arith.py::test_add"]["markers"]
    assert "xfail" in by_id[M + "test_xfail"]["markers"]
    # A test whose setup failed keeps its markers, the one its fixture added too.
    assert by_id[M + "test_setup_error"]["markers"] == ["from_fixture", "smoke"]
    assert by_id[M + "test_setup_error"]["marker_values"] == {"smoke": "setup"}
    assert "markers" not in by_id[M + "test_pass"]
    assert "hello from the log" in by_id[M + "test_logs"]["log"]
    assert "log" not in by_id[M + "test_pass"]
    assert all(e["worker"] is None for e in tests)

    stored = stored_tests(project, run_id)
    assert {n: (t["outcome"], t["phase"]) for n, t in stored.items()} == MIXED_EXPECTED
    assert stored[M + "test_param[2]"]["params"] == {"n": "2"}
    assert "smoke" in stored[M + "test_marked"]["markers"]
    assert "hello from the log" in stored[M + "test_logs"]["log"]
    assert "setup boom" in stored[M + "test_setup_error"]["message"]
    assert {k: row[k] for k in expected_counts(MIXED_EXPECTED)} == expected_counts(MIXED_EXPECTED)
    assert (row["status"], row["exit_code"]) == ("complete", 1)


@pytest.mark.parametrize(
    ("extra", "exit_code", "ran"),
    [
        ([], 2, {}),
        (
            ["--", "--continue-on-collection-errors"],
            1,
            {
                "tests/arith/test_arith.py::test_add": ("passed", "call"),
                "tests/arith/test_arith.py::test_div": ("passed", "call"),
                "tests/text/test_text.py::test_shout": ("passed", "call"),
            },
        ),
    ],
    ids=["interrupted", "continue"],
)
def test_collection_errors_are_recorded(
    project: Path, cli: Cli, extra: list[str], exit_code: int, ran: dict[str, tuple[str, str]]
) -> None:
    """A module with a syntax error and one with an import error each become an
    ``error`` in phase ``collect``, in the journal and in history, next to the tests
    that did run; the exit code is pytest's."""
    write_files(
        project,
        {
            "tests/test_syntax.py": "def broken(:\n    pass\n",
            "tests/test_import.py": "import calc.no_such_module\n\n\ndef test_x():\n    pass\n",
        },
    )
    done = cli("run", *extra, cwd=project)
    assert done.returncode == exit_code, done.stdout + done.stderr
    run_id = run_id_of(done)
    row = run_row(project, run_id)
    events = read_events(Path(row["run_dir"]) / "journal.jsonl")
    assert events[0]["event"] == "session_start"
    assert events[-1]["event"] == "session_finish"
    assert events[-1]["exitstatus"] == exit_code

    expected = {
        "tests/test_syntax.py": ("error", "collect"),
        "tests/test_import.py": ("error", "collect"),
        **ran,
    }
    tests = [e for e in events if e["event"] == "test"]
    assert Counter(e["nodeid"] for e in tests) == Counter(expected.keys())
    by_id = {e["nodeid"]: e for e in tests}
    assert {n: (e["outcome"], e["when"]) for n, e in by_id.items()} == expected
    assert "SyntaxError" in by_id["tests/test_syntax.py"]["longrepr"]
    assert "No module named 'calc.no_such_module'" in by_id["tests/test_import.py"]["longrepr"]

    stored = stored_tests(project, run_id)
    assert {n: (t["outcome"], t["phase"]) for n, t in stored.items()} == expected
    assert {k: row[k] for k in expected_counts(expected)} == expected_counts(expected)
    assert row["exit_code"] == exit_code


def test_module_level_skip_is_recorded(project: Path, cli: Cli) -> None:
    """A module skipped at import (``pytest.importorskip``) is journalled as a skip in
    phase ``collect``, so history counts as many skips as pytest's own summary."""
    write_files(
        project,
        {
            "tests/test_optional.py": """
                import pytest

                pytest.importorskip("no_such_optional_dependency")


                def test_needs_it():
                    pass
            """,
        },
    )
    done = cli("run", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(r"=+ (\d+) passed, (\d+) skipped in ", done.stdout)
    assert summary, done.stdout
    assert summary.groups() == ("3", "1")
    run_id = run_id_of(done)
    row = run_row(project, run_id)
    events = read_events(Path(row["run_dir"]) / "journal.jsonl")
    skips = [e for e in events if e["event"] == "test" and e["outcome"] == "skipped"]
    assert [(e["nodeid"], e["when"]) for e in skips] == [("tests/test_optional.py", "collect")]
    assert "no_such_optional_dependency" in skips[0]["longrepr"]
    assert (row["passed"], row["skipped"]) == (3, 1)


RERUNS = {
    "tests/test_reruns.py": """
        from pathlib import Path

        import pytest


        def attempt(name):
            \"\"\"1 on the first call for ``name`` in this project, 2 on the second...\"\"\"
            path = Path(__file__).with_name(f"attempts_{name}")
            n = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(n))
            return n


        @pytest.fixture
        def setup_fails_once():
            if attempt("setup") < 2:
                raise RuntimeError("setup boom")


        @pytest.fixture
        def teardown_fails_once():
            yield
            if attempt("teardown") < 2:
                raise RuntimeError("teardown boom")


        def test_second_time():
            n = attempt("call")
            print(f"attempt {n}")
            assert n >= 2, "first attempt fails"


        @pytest.mark.flaky(reruns=3)
        def test_marker_third_time():
            assert attempt("marker") >= 3


        def test_setup_once(setup_fails_once):
            pass


        def test_teardown_once(teardown_fails_once):
            pass


        def test_always_fails():
            assert False, "every attempt fails"


        def test_steady():
            pass
    """,
}
R = "tests/test_reruns.py::"
# nodeid -> (outcome, phase, reruns) with `--reruns 2`
RERUNS_EXPECTED = {
    R + "test_second_time": ("passed", "call", 1),
    R + "test_marker_third_time": ("passed", "call", 2),
    R + "test_setup_once": ("passed", "call", 1),
    R + "test_teardown_once": ("passed", "call", 1),
    R + "test_always_fails": ("failed", "call", 2),
    R + "test_steady": ("passed", "call", 0),
    "tests/arith/test_arith.py::test_add": ("passed", "call", 0),
    "tests/arith/test_arith.py::test_div": ("passed", "call", 0),
    "tests/text/test_text.py::test_shout": ("passed", "call", 0),
}


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_reruns_are_one_test_with_the_last_attempts_result(
    project: Path, cli: Cli, xdist: list[str]
) -> None:
    """pytest-rerunfailures logs a retried attempt as ``rerun``: the journal still has one
    ``test`` event per test, with the last attempt's outcome and ``reruns`` counting the
    earlier ones, whichever phase failed; history stores the same."""
    write_files(project, RERUNS)
    done = cli("run", "--", "--reruns", "2", *xdist, cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr
    # pytest's own summary counts the passed call of the attempt whose teardown failed as
    # a pass too (9 passed); TestViper counts tests.
    assert "1 failed, 9 passed, 7 rerun" in done.stdout
    assert "tests:    8 passed, 1 failed, 5 rerun (4 then passed)" in done.stdout
    run_id = run_id_of(done)
    row = run_row(project, run_id)
    events = read_events(Path(row["run_dir"]) / "journal.jsonl")
    tests = [e for e in events if e["event"] == "test"]
    assert Counter(e["nodeid"] for e in tests) == Counter(RERUNS_EXPECTED.keys())
    by_id = {e["nodeid"]: e for e in tests}
    assert {
        n: (e["outcome"], e["when"], e.get("reruns", 0)) for n, e in by_id.items()
    } == RERUNS_EXPECTED
    assert "reruns" not in by_id[R + "test_steady"]  # left out when there were none
    starts = Counter(e["nodeid"] for e in events if e["event"] == "test_start")
    assert starts == Counter({n: r + 1 for n, (_, _, r) in RERUNS_EXPECTED.items()})
    # The last attempt's result: no failure text left over from the retried ones.
    for name in ("test_second_time", "test_setup_once", "test_teardown_once"):
        assert "longrepr" not in by_id[R + name], by_id[R + name]
    assert "every attempt fails" in by_id[R + "test_always_fails"]["longrepr"]
    assert "attempt 2" in by_id[R + "test_second_time"]["stdout"]
    first = by_id[R + "test_marker_third_time"]
    assert first["stop"] - first["start"] >= first["duration"]  # spans all attempts

    stored = stored_tests(project, run_id)
    assert {n: (t["outcome"], t["phase"], t["reruns"]) for n, t in stored.items()} == (
        RERUNS_EXPECTED
    )
    outcomes = {n: (o, p) for n, (o, p, _) in RERUNS_EXPECTED.items()}
    assert {k: row[k] for k in expected_counts(outcomes)} == expected_counts(outcomes)


# ---------------------------------------------------------------- 2. kill -9


def test_pytest_killed_mid_run_is_stored_incomplete(
    project: Path, tmp_path: Path, background: Callable[..., Runner]
) -> None:
    """SIGKILL to pytest mid-run: the runner still ingests the finished tests, marks the
    run incomplete, names the test in flight, and exits 137 (128 + 9)."""
    blocking_project(project, tmp_path / "never-created")
    runner = background(project, "--", "tests/test_block.py")
    run_dir = wait_for_block(project, runner)
    runner.find_pytest().kill()

    assert runner.proc.wait(timeout=120) == 137
    stdout = runner.stdout.read_text(encoding="utf-8")
    assert f"in flight when pytest stopped: {B}test_block" in stdout
    run_id = run_id_of(subprocess.CompletedProcess([], 137, stdout, ""))
    assert run_id == run_dir.name
    row = run_row(project, run_id)
    assert row["status"] == "incomplete"
    assert row["exit_code"] == -9
    stored = stored_tests(project, run_id)
    assert set(stored) == FINISHED_BEFORE_BLOCK
    assert {t["outcome"] for t in stored.values()} == {"passed"}
    assert (row["tests_total"], row["passed"]) == (3, 3)
    events = read_events(run_dir / "journal.jsonl")
    assert "session_finish" not in {e["event"] for e in events}


def test_runner_and_pytest_killed_recovered_by_ingest(
    project: Path, tmp_path: Path, cli: Cli, background: Callable[..., Runner]
) -> None:
    """SIGKILL to the runner and pytest together (the whole process group): nothing reaches
    history, and ``testviper runs.ingest RUN_DIR`` recovers the run as incomplete with the
    finished tests and the test in flight named."""
    blocking_project(project, tmp_path / "never-created")
    runner = background(project, "--", "tests/test_block.py")
    run_dir = wait_for_block(project, runner)
    child = runner.find_pytest()
    os.killpg(runner.proc.pid, signal.SIGKILL)
    runner.proc.wait(timeout=30)
    wait_until(lambda: gone(child), "pytest to die")

    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    assert meta["run_id"] == run_dir.name
    assert "exit_code" not in meta
    db = project / ".testviper" / "history.sqlite"
    if db.exists():
        assert query(project, "SELECT id FROM runs WHERE id = ?", run_dir.name) == []

    done = cli("runs.ingest", str(run_dir), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"in flight when pytest stopped: {B}test_block" in done.stdout
    row = run_row(project, run_dir.name)
    assert row["status"] == "incomplete"
    assert row["exit_code"] is None
    stored = stored_tests(project, run_dir.name)
    assert set(stored) == FINISHED_BEFORE_BLOCK
    assert {t["outcome"] for t in stored.values()} == {"passed"}


def test_recovered_run_keeps_its_environment(
    project: Path, tmp_path: Path, cli: Cli, background: Callable[..., Runner]
) -> None:
    """A run whose runner and pytest were killed together still records where it ran
    (Python version, host) once ``runs.ingest`` recovers it, as a normal run does."""
    blocking_project(project, tmp_path / "never-created")
    runner = background(project, "--", "tests/test_block.py")
    run_dir = wait_for_block(project, runner)
    child = runner.find_pytest()
    os.killpg(runner.proc.pid, signal.SIGKILL)
    runner.proc.wait(timeout=30)
    wait_until(lambda: gone(child), "pytest to die")

    done = cli("runs.ingest", str(run_dir), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    row = run_row(project, run_dir.name)
    assert (row["python"], row["host"]) == (platform.python_version(), socket.gethostname())


def test_runner_killed_pytest_finishes_recovered_by_ingest(
    project: Path, tmp_path: Path, cli: Cli, background: Callable[..., Runner]
) -> None:
    """SIGKILL to the runner only: pytest finishes on its own, and ``runs.ingest`` stores
    the full run (complete, pytest's exit code, every test, coverage) from the run dir."""
    release = tmp_path / "release"
    blocking_project(project, release)
    runner = background(project, "--", "tests/test_block.py")
    run_dir = wait_for_block(project, runner)
    child = runner.find_pytest()
    psutil.Process(runner.proc.pid).kill()
    runner.proc.wait(timeout=30)
    release.touch()
    wait_until(lambda: gone(child), "the orphaned pytest to finish")

    assert "exit_code" not in json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    done = cli("runs.ingest", str(run_dir), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "in flight" not in done.stdout
    row = run_row(project, run_dir.name)
    assert (row["status"], row["exit_code"]) == ("complete", 0)
    stored = stored_tests(project, run_dir.name)
    assert set(stored) == FINISHED_BEFORE_BLOCK | {B + "test_block", B + "test_after"}
    assert {t["outcome"] for t in stored.values()} == {"passed"}
    assert row["cov_percent"] is not None


# ---------------------------------------------------------------- 3. xdist


def test_xdist_gives_same_results_as_serial(project: Path, cli: Cli) -> None:
    """``-- -n 2`` stores the same tests, outcomes, params and markers and the same
    coverage as a serial run; only the -n 2 run records workers gw0 and gw1."""
    write_files(project, MIXED)
    serial = cli("run", cwd=project)
    parallel = cli("run", "--", "-n", "2", cwd=project)
    assert serial.returncode == 1, serial.stdout + serial.stderr
    assert parallel.returncode == 1, parallel.stdout + parallel.stderr
    ids = run_id_of(serial), run_id_of(parallel)
    runs = [run_row(project, i) for i in ids]
    tests = [stored_tests(project, i) for i in ids]

    def essence(stored: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {
            n: (t["outcome"], t["phase"], t["params"], sorted(t["markers"]))
            for n, t in stored.items()
        }

    assert {n: v[:2] for n, v in essence(tests[0]).items()} == MIXED_EXPECTED
    assert essence(tests[1]) == essence(tests[0])
    assert runs[0]["cov_percent"] is not None
    assert runs[1]["cov_percent"] == pytest.approx(runs[0]["cov_percent"], abs=0.01)
    assert runs[1]["cov_statements"] == runs[0]["cov_statements"]
    assert runs[1]["cov_missing"] == runs[0]["cov_missing"]
    comps = [
        {
            r["component"]: r["percent"]
            for r in query(project, "SELECT * FROM component_coverage WHERE run_id = ?", i)
        }
        for i in ids
    ]
    assert set(comps[0]) == {"arith", "text"}
    assert comps[1] == pytest.approx(comps[0], abs=0.01)
    assert {t["worker"] for t in tests[0].values()} == {None}
    assert {t["worker"] for t in tests[1].values()} == {"gw0", "gw1"}


# ---------------------------------------------------------------- 4. components


COMPONENT_PROJECT = {
    "testviper.yaml": """
        project:
          name: calc
        coverage:
          source: [src]
        components:
          geometry:
            source: [src/calc/geometry]
          arith:
            source: [src/calc/arith.py]
          tee:
            source: ["src/calc/t*.py"]
    """,
    "src/calc/geometry/__init__.py": "",
    "src/calc/geometry/shapes.py": """
        def area(kind, size):
            if kind == "square":
                return size * size
            if kind == "circle":
                return 3.14159 * size * size
            raise ValueError(kind)
    """,
    "src/calc/geometry/solid/__init__.py": "",
    "src/calc/geometry/solid/volume.py": """
        def cube(size):
            return size**3


        def sphere(radius):
            if radius < 0:
                raise ValueError(radius)
            return 4 / 3 * 3.14159 * radius**3
    """,
    "src/calc/tools.py": """
        def clamp(x, low, high):
            if x < low:
                return low
            if x > high:
                return high
            return x
    """,
    "tests/test_geometry.py": """
        from calc.geometry.shapes import area
        from calc.geometry.solid.volume import cube
        from calc.text import shout
        from calc.tools import clamp


        def test_square():
            assert area("square", 2) == 4


        def test_cube():
            assert cube(2) == 8


        def test_clamp_and_shout():
            assert clamp(5, 0, 3) == 3
            assert shout("") == ""
    """,
}


def test_component_coverage_equals_coverage_report(project: Path, cli: Cli, tmp_path: Path) -> None:
    """Each component's stored figures (directory, single file, glob) equal what
    ``coverage report/json --include=<its globs>`` gives for the run's data file, to
    0.01 pp; the run's total equals ``coverage report`` without --include."""
    write_files(project, COMPONENT_PROJECT)
    done = cli("run", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = run_id_of(done)
    row = run_row(project, run_id)
    data_file = Path(row["run_dir"]) / ".coverage"
    assert data_file.is_file()
    settings = load(project / "testviper.yaml")
    stored = {
        r["component"]: r
        for r in query(project, "SELECT * FROM component_coverage WHERE run_id = ?", run_id)
    }
    assert set(stored) == {"geometry", "arith", "tee"}
    expected_files = {"geometry": 4, "arith": 1, "tee": 2}
    for name, comp in stored.items():
        globs = settings.component_globs(name)
        reference = cov_json_totals(data_file, project, globs, tmp_path / f"{name}.json")
        assert comp["files"] == reference["files"] == expected_files[name], name
        assert comp["statements"] == reference["num_statements"], name
        assert comp["missing"] == reference["missing_lines"], name
        assert comp["branches"] == reference["num_branches"], name
        assert comp["covered_branches"] == reference["covered_branches"], name
        assert 0 < comp["percent"] < 100, (name, comp["percent"])
        assert comp["percent"] == pytest.approx(cov_total(data_file, project, globs), abs=0.01)
    assert row["cov_percent"] == pytest.approx(cov_total(data_file, project), abs=0.01)


# ---------------------------------------------------------------- 5. --no-cov


@pytest.mark.parametrize(
    "args", [["run", "--no-cov"], ["run", "--", "--no-cov"]], ids=["task-flag", "pytest-flag"]
)
def test_no_cov_stores_tests_without_coverage(project: Path, cli: Cli, args: list[str]) -> None:
    """``run --no-cov`` and ``run -- --no-cov`` store the tests, leave every coverage
    column NULL, print "coverage: not measured" and exit 0."""
    done = cli(*args, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "coverage: not measured" in done.stdout
    run_id = run_id_of(done)
    stored = stored_tests(project, run_id)
    assert {n: t["outcome"] for n, t in stored.items()} == {
        "tests/arith/test_arith.py::test_add": "passed",
        "tests/arith/test_arith.py::test_div": "passed",
        "tests/text/test_text.py::test_shout": "passed",
    }
    row = run_row(project, run_id)
    cov_columns = ["cov_statements", "cov_missing", "cov_branches", "cov_covered_branches"]
    assert {c: row[c] for c in [*cov_columns, "cov_percent"]} == dict.fromkeys(
        [*cov_columns, "cov_percent"]
    )
    assert query(project, "SELECT * FROM component_coverage WHERE run_id = ?", run_id) == []
    assert query(project, "SELECT * FROM file_coverage WHERE run_id = ?", run_id) == []


# ---------------------------------------------------------------- 6. corrupt journal


def test_corrupt_journal_lines_are_skipped_with_a_warning(project: Path, cli: Cli) -> None:
    """A garbage line in the middle and a torn last line: ``runs.ingest`` (into an empty
    history) keeps every other line, warns on stderr with file:line for both, and shows
    no traceback."""
    first = cli("run", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = run_id_of(first)
    run_dir = Path(run_row(project, run_id)["run_dir"])
    journal = run_dir / "journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["event"] for line in lines[:3]] == [
        "session_start",
        "test_start",
        "test",
    ]
    last = lines[-1].rstrip(b"\n")
    damaged = [*lines[:3], b"\xff\xfe{this is not json\n", *lines[3:-1], last[: len(last) // 2]]
    journal.write_bytes(b"".join(damaged))
    forget_history(project)

    done = cli("runs.ingest", str(run_dir), cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"{journal}:4: " in done.stderr
    assert f"{journal}:{len(damaged)}: " in done.stderr
    assert "torn last line" in done.stderr
    stored = stored_tests(project, run_id)
    assert {n: t["outcome"] for n, t in stored.items()} == {
        "tests/arith/test_arith.py::test_add": "passed",
        "tests/arith/test_arith.py::test_div": "passed",
        "tests/text/test_text.py::test_shout": "passed",
    }
    assert run_row(project, run_id)["tests_total"] == 3


# ---------------------------------------------------------------- 7. corrupt coverage


def cut_in_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def not_utf8(data: bytes) -> bytes:
    return b"\xff\xfe" + data[2:]


def meta_not_a_mapping(data: bytes) -> bytes:
    report = json.loads(data)
    report["meta"] = ["not", "a", "mapping"]
    return json.dumps(report).encode()


@pytest.mark.parametrize("damage", [cut_in_half, not_utf8, meta_not_a_mapping])
def test_corrupt_coverage_json_exits_2_and_keeps_tests(
    project: Path, cli: Cli, damage: Callable[[bytes], bytes]
) -> None:
    """A damaged coverage.json (truncated, not UTF-8, valid JSON of the wrong shape):
    ``runs.ingest`` (into an empty history) exits 2 with one line naming the file, no
    traceback, and still stores the run's tests."""
    first = cli("run", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    run_id = run_id_of(first)
    run_dir = Path(run_row(project, run_id)["run_dir"])
    report = run_dir / "coverage.json"
    report.write_bytes(damage(report.read_bytes()))
    forget_history(project)

    done = cli("runs.ingest", str(run_dir), cwd=project)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert str(report) in errors[0]
    stored = stored_tests(project, run_id)
    assert set(stored) == {
        "tests/arith/test_arith.py::test_add",
        "tests/arith/test_arith.py::test_div",
        "tests/text/test_text.py::test_shout",
    }
    assert run_row(project, run_id)["tests_total"] == 3


# ---------------------------------------------------------------- 8. pytest arguments


def test_paths_and_quoted_options_after_double_dash(project: Path, cli: Cli) -> None:
    """``run -- tests/arith -k "add or div"`` passes the path and the quoted expression
    through intact: exactly the two matching tests under tests/arith run."""
    write_files(
        project,
        {
            "tests/arith/test_more.py": "def test_mul():\n    assert 2 * 3 == 6\n",
            "tests/text/test_more_text.py": "def test_add_exclaim():\n    assert True\n",
        },
    )
    done = cli("run", "--", "tests/arith", "-k", "add or div", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    run_id = run_id_of(done)
    assert set(stored_tests(project, run_id)) == {
        "tests/arith/test_arith.py::test_add",
        "tests/arith/test_arith.py::test_div",
    }
    start = read_events(Path(run_row(project, run_id)["run_dir"]) / "journal.jsonl")[0]
    assert start["args"][-3:] == ["tests/arith", "-k", "add or div"]
