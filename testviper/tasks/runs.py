"""``inv run`` and the ``runs`` collection: run the suite, list and show runs."""

import shlex
import sys
from typing import TYPE_CHECKING

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.errors import UserError
from testviper.tasks import delivery
from testviper.tasks.common import CONFIG_HELP, ShortFlagTask, settings, user_errors

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from testviper.reporter.deliver import Handover
    from testviper.runner.run import Ingested


def pytest_args(c: Context) -> list[str]:
    """Everything after ``--``, with the user's quoting intact.

    Invoke joins the remainder with spaces, which loses quoting (``-k "a and b"``), so
    the original argv is preferred when it holds the ``--``.
    """
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


def report(result: "Ingested") -> bool:
    """Print a stored run's summary and its warnings; False if its coverage was unusable."""
    from testviper.runner.summary import format_summary

    print(format_summary(result))
    for warning in result.warnings:
        print(f"testviper: warning: {warning}", file=sys.stderr)
    if result.coverage_error is not None:
        print(f"testviper: error: {result.coverage_error}", file=sys.stderr)
        return False
    return True


@task(
    name="run",
    klass=ShortFlagTask,
    help={
        "config": CONFIG_HELP,
        "no_cov": "run without coverage measurement",
        "no_deliver": "skip ReportPortal delivery (local runs; nothing goes to the outbox)",
        "require_delivery": "exit 1 if delivery to any instance fails (default: warn only)",
        "live": "stream while the tests run even if reportportal.live is false",
        "no_live": "deliver after the tests instead of while they run (reportportal.live: false)",
    },
)
@user_errors
def run_(
    c: Context,
    config: str | None = None,
    no_cov: bool = False,
    no_deliver: bool = False,
    require_delivery: bool = False,
    live: bool = False,
    no_live: bool = False,
) -> None:
    """Run pytest once with coverage and store the run: inv run [-- PATHS PYTEST_ARGS].

    Test paths and pytest options go after ``--``, e.g. ``inv run -- tests/unit -x -n 2``.
    The exit code is pytest's. A corrupt coverage report is reported (exit 2 when the
    tests themselves passed) but the test results are stored regardless. The run is then
    delivered to every enabled ReportPortal instance; what fails stays in the outbox.
    """
    import gc

    from testviper.runner.starter import prestart

    if live and no_live:
        raise UserError("--live and --no-live contradict each other: give one of them")

    # pytest loads while the configuration is validated (see testviper.runner.starter).
    starter = prestart(config)
    try:
        from testviper.runner.run import run

        s = settings(config)
        if not no_deliver:
            delivery.check_keys(s)  # before pytest starts: a missing key must not cost a run

        handovers: dict[str, Handover] = {}  # from the streams, for the post-run delivery

        def stream(run_dir: "Path", run_id: str) -> "Callable[[], None]":
            # Imported here, once pytest is starting: the delivery code loads SQLAlchemy.
            from testviper.reporter import live as live_delivery

            stop = live_delivery.start(s, run_dir, run_id)
            return lambda: handovers.update(stop())

        streaming = live or (s.config.reportportal.live and not no_live)
        follow = stream if streaming and s.enabled_instances and not no_deliver else None
        result, code = run(s, pytest_args(c), cov=not no_cov, follow=follow, starter=starter)
    finally:
        if starter is not None:
            starter.cancel()  # unless it runs the tests
    if not report(result) and code == 0:
        code = 2
    if not no_deliver:
        delivered = delivery.deliver_run(s, result.run.id, result.run.run_dir, handovers)
        if require_delivery and not delivered and code == 0:
            code = 1
    # Nothing below needs the run's objects: exempting them from the interpreter's
    # final garbage collection cuts about 0.1 s from every run's exit.
    gc.freeze()
    if code != 0:
        # A signal (negative code) exits as a shell would report it: 128 + signal.
        raise Exit(code=code if code > 0 else 128 - code)


@task(name="list", default=True, help={"config": CONFIG_HELP, "limit": "how many runs"})
@user_errors
def list_(c: Context, config: str | None = None, limit: int = 20) -> None:
    """List recent runs, newest first."""
    from testviper.history.store import list_runs
    from testviper.runner.run import connect
    from testviper.runner.summary import format_run_list

    print(format_run_list(list_runs(connect(settings(config, check_paths=False)), limit)))


@task(
    positional=["run_id"], help={"config": CONFIG_HELP, "run_id": "run id, a prefix, or 'latest'"}
)
@user_errors
def show(c: Context, run_id: str, config: str | None = None) -> None:
    """Show one run: metadata, coverage by component, failing tests."""
    from testviper.history.store import find_run, run_details
    from testviper.runner.run import connect
    from testviper.runner.summary import format_run

    history = connect(settings(config, check_paths=False))
    run = find_run(history, run_id)
    print(format_run(run, *run_details(history, run.id)))


@task(
    positional=["run_dir"],
    help={"config": CONFIG_HELP, "run_dir": "a directory under <state>/runs/"},
)
@user_errors
def ingest(c: Context, run_dir: str, config: str | None = None) -> None:
    """Store (again) a run directory in history, e.g. after the runner itself was killed."""
    from pathlib import Path

    from testviper.runner.run import ingest as ingest_run

    if not report(ingest_run(settings(config), Path(run_dir).resolve())):
        raise Exit(code=2)


runs = Collection("runs", list_, show, ingest)
