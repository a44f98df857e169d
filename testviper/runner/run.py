"""``inv run``: pytest once, with coverage and the journal plugin, then into history.

Each run gets a directory ``<state>/runs/<run_id>/`` holding ``run.json`` (what was
started, where), ``journal.jsonl`` (the plugin's events) and ``coverage.json``. That
directory is the source of truth: ingesting it again (``inv runs.ingest``) rebuilds the
run's history rows, which is how a run whose parent process died is recovered.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testviper.config import Settings
from testviper.config_file import DEFAULT_KEY_ENV
from testviper.coverage_data import include_matcher, read_coverage_json
from testviper.errors import UserError, os_error
from testviper.fsutil import atomic_write
from testviper.history.records import RunRecord
from testviper.ids import new_run_id
from testviper.runner import environment
from testviper.runner.journal import Journal, JournalReader, read_journal

if TYPE_CHECKING:  # the store pulls in SQLAlchemy; run() loads it while pytest runs
    from testviper.history.store import History
    from testviper.runner.starter import Starter

PLUGIN = "testviper.runner.plugin"
META, JOURNAL, COVERAGE = "run.json", "journal.jsonl", "coverage.json"


@dataclass
class Ingested:
    run: RunRecord
    journal_path: Path
    in_flight: list[str]
    warnings: list[str] = field(default_factory=list)
    coverage_error: UserError | None = None
    coverage_lost: bool = False  # requested, but pytest stopped before writing it


def ensure_state_dir(settings: Settings) -> Path:
    """Create the state directory and prove it is writable, before pytest starts."""
    state = settings.state_dir
    try:
        state.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=state):
            pass
    except OSError as exc:
        raise UserError(
            f"paths.state: cannot write to '{state}' ({exc.strerror}); "
            "point paths.state at a writable directory or fix its permissions"
        ) from None
    return state


def pytest_command(settings: Settings, run_dir: Path, args: Sequence[str], cov: bool) -> list[str]:
    """The one pytest command line of a run."""
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN, f"--testviper-journal={run_dir / JOURNAL}"]
    if cov:
        cfg = settings.config.coverage
        if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
            # pytest loads no installed plugin by itself: name pytest-cov's entry point.
            cmd += ["-p", "pytest_cov"]
        cmd += [f"--cov={src}" for src in cfg.source]
        cmd += [f"--cov-report=json:{run_dir / COVERAGE}"]
        if cfg.branch:
            cmd.append("--cov-branch")
        if cfg.omit:
            rc = run_dir / "coveragerc"
            atomic_write(rc, "[run]\nomit =\n" + "".join(f"    {p}\n" for p in cfg.omit))
            cmd.append(f"--cov-config={rc}")
    return cmd + list(args)


def _start(
    settings: Settings, args: Sequence[str], cov: bool, starter: "Starter | None"
) -> tuple[Path, dict[str, Any], subprocess.Popen[bytes]]:
    state = ensure_state_dir(settings)
    run_id = new_run_id()
    run_dir = state / "runs" / run_id
    run_dir.mkdir(parents=True)
    cmd = pytest_command(settings, run_dir, args, cov)
    meta: dict[str, Any] = {
        "run_id": run_id,
        "project": settings.project_name,
        "label": settings.label,
        "root": str(settings.root),
        "started_at": datetime.now(UTC).isoformat(),
        "command": cmd,
    }
    try:
        # Written before pytest starts: a run whose runner dies can still be ingested.
        atomic_write(run_dir / META, json.dumps(meta, indent=2))
    except OSError:
        shutil.rmtree(run_dir, ignore_errors=True)  # no half-made run directory
        raise
    # The tests never see ReportPortal keys: a test that prints its environment must
    # not put a key into the journal or the terminal. RP_API_KEY is withheld even with
    # no instance configured: it is the old scripts' key variable.
    secrets = {DEFAULT_KEY_ENV} | {i.api_key_env for i in settings.config.reportportal.instances}
    env = {
        **{k: v for k, v in os.environ.items() if k not in secrets},
        "TESTVIPER_RUN_ID": run_id,
        # Keeps coverage data out of the project and apart from concurrent runs.
        "COVERAGE_FILE": str(run_dir / ".coverage"),
        "AGENT_NO_ANALYTICS": "1",
    }
    if starter is not None and starter.usable(secrets):
        try:
            # The arguments after `python -m pytest`: the process is that already.
            return run_dir, meta, starter.launch(cmd[3:], settings.root, env)
        except OSError:
            pass  # it died before the request: start pytest the ordinary way
    if starter is not None:
        starter.cancel()
    return run_dir, meta, subprocess.Popen(cmd, cwd=settings.root, env=env)


def _leave_ctrl_c_to_pytest() -> Callable[[], None]:
    """Ignore SIGINT until pytest exits; returns the function that restores the handler.

    Ctrl-C reaches pytest and the runner together (one process group): pytest stops the
    tests and writes its summary, and the runner, rather than dying in the middle of
    whatever it was doing meanwhile (git, imports, the live stream's start), goes on to
    store and deliver what ran. Set after pytest has started, so pytest keeps its own
    handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (and gets signals)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore


def _coverage_requested(command: Sequence[str]) -> bool:
    return any(arg.startswith("--cov-report=json:") for arg in command) and (
        "--no-cov" not in command
    )


def component_matchers(settings: Settings) -> dict[str, re.Pattern[str]]:
    return {
        name: include_matcher(settings.component_globs(name)) for name in settings.config.components
    }


def ingest(
    settings: Settings,
    run_dir: Path,
    history: "History | None" = None,
    matchers: dict[str, re.Pattern[str]] | None = None,
    journal: Journal | None = None,
) -> Ingested:
    """Store the run recorded in ``run_dir`` in history.

    Tests are stored even when the coverage file is corrupt; the coverage problem is
    returned in ``coverage_error`` for the caller to report. ``journal`` is the run's
    journal when the caller has read it already (``run`` reads it while pytest runs).
    """
    try:
        meta = json.loads((run_dir / META).read_text(encoding="utf-8"))
        run_id = meta["run_id"]
    except (OSError, ValueError, KeyError):
        raise UserError(f"{run_dir}: not a TestViper run directory (no readable {META})") from None
    journal = journal if journal is not None else read_journal(run_dir / JOURNAL)
    finish = journal.finish or {}
    exit_code = meta.get("exit_code", finish.get("exitstatus"))
    killed = exit_code is not None and exit_code < 0
    started = datetime.fromisoformat(meta["started_at"]).astimezone(UTC).replace(tzinfo=None)
    stopped = finish.get("time") or max(
        (p.stat().st_mtime for p in run_dir.iterdir()), default=None
    )
    run = RunRecord(
        id=run_id,
        project=meta.get("project") or settings.project_name,
        label=meta.get("label"),
        status="complete" if journal.complete and not killed else "incomplete",
        exit_code=exit_code,
        started_at=started,
        finished_at=datetime.fromtimestamp(stopped, UTC).replace(tzinfo=None) if stopped else None,
        command=meta.get("command", []),
        run_dir=str(run_dir),
        environment=meta.get("environment", {}),
        tests=journal.tests,
    )
    result = Ingested(run, run_dir / JOURNAL, journal.in_flight, list(journal.warnings))
    coverage_file = run_dir / COVERAGE
    result.coverage_lost = _coverage_requested(run.command) and not coverage_file.exists()
    if coverage_file.exists():
        try:
            data = read_coverage_json(coverage_file)
        except UserError as exc:
            result.coverage_error = exc
        else:
            root = Path(meta.get("root") or settings.root)
            run.files = list(data.files)
            run.coverage = data.totals
            matchers = matchers if matchers is not None else component_matchers(settings)
            run.components = {name: data.component(m, root) for name, m in matchers.items()}
    from testviper.history.store import save_run

    save_run(history or connect(settings), run)
    return result


def connect(settings: Settings) -> "History":
    """Open (and migrate) the configured history."""
    from testviper.history.store import open_history

    if settings.config.history.url is None:
        ensure_state_dir(settings)  # so a bad state dir is blamed on paths.state
    return open_history(settings.history_url, settings.config.history.busy_timeout)


# Called with the pytest process as soon as it has started; returns the function called
# once pytest has exited (``inv profile`` samples the process tree in between).
Watcher = Callable[[subprocess.Popen[bytes]], Callable[[], None]]
# Called with the run directory and id once run.json holds the run's git state; returns
# the function called once pytest has exited (``inv run --live`` streams the journal).
Follower = Callable[[Path, str], Callable[[], None]]


def run(
    settings: Settings,
    args: Sequence[str],
    cov: bool = True,
    watch: Watcher | None = None,
    follow: Follower | None = None,
    starter: "Starter | None" = None,
) -> tuple[Ingested, int]:
    """``inv run``: pytest once, then ingest. Returns the ingested run and pytest's code.

    Whatever fails once pytest has started (history locked, disk full) leaves the run
    directory in place and says how to store it later: results are never thrown away.
    ``watch`` observes the pytest process while it runs, ``follow`` the run directory
    (see ``Watcher`` and ``Follower``); ``starter`` is a pytest process already loading
    (``testviper.runner.starter``), used when it fits the run's environment.
    """
    run_dir, meta, proc = _start(settings, args, cov, starter)
    stops = [_leave_ctrl_c_to_pytest()]
    if watch is not None:
        stops.append(watch(proc))
    # Parsing the journal as it grows leaves only its last lines for after pytest.
    reader = JournalReader(run_dir / JOURNAL)
    stops.append(reader.follow())

    def wait() -> int:
        try:
            return proc.wait()
        finally:
            for stop in stops:
                stop()

    try:
        # While the suite runs: git state, coverage.py's component matchers and the
        # history connection (heavy imports, the schema check), so none of them adds to
        # the wall time.
        meta["environment"] = environment.collect(settings.root)
        atomic_write(run_dir / META, json.dumps(meta, indent=2))
        if follow is not None:
            stops.append(follow(run_dir, meta["run_id"]))
        matchers = component_matchers(settings)
        history = connect(settings)
    except (UserError, OSError) as exc:
        wait()  # the tests go on: what they record is what we keep
        raise _kept(exc, run_dir) from None
    code = wait()
    try:
        # Recorded before ingest, so `inv runs.ingest` still knows it if ingest fails.
        atomic_write(run_dir / META, json.dumps({**meta, "exit_code": code}, indent=2))
        return ingest(settings, run_dir, history, matchers, reader.finish()), code
    except (UserError, OSError) as exc:
        raise _kept(exc, run_dir) from None


def _kept(exc: UserError | OSError, run_dir: Path) -> UserError:
    reason = exc if isinstance(exc, UserError) else os_error(exc)
    return UserError(
        f"{reason}. What pytest recorded is kept in {run_dir}: fix the problem, then "
        f"`inv runs.ingest {run_dir}`"
    )
