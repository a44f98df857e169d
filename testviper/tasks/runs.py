"""``inv run`` and the ``runs`` collection: run the suite, list and show runs."""

import shlex
import sys

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


def pytest_args(c: Context) -> list[str]:
    """Everything after ``--``, with the user's quoting intact.

    Invoke joins the remainder with spaces, which loses quoting (``-k "a and b"``), so
    the original argv is preferred when it holds the ``--``.
    """
    if "--" in sys.argv:
        return sys.argv[sys.argv.index("--") + 1 :]
    return shlex.split(c.remainder)


@task(
    name="run",
    help={
        "config": CONFIG_HELP,
        "no_cov": "run without coverage measurement",
    },
)
@user_errors
def run_(c: Context, config: str | None = None, no_cov: bool = False) -> None:
    """Run pytest once with coverage and store the run: inv run [-- PATHS PYTEST_ARGS].

    Test paths and pytest options go after ``--``, e.g. ``inv run -- tests/unit -x -n 2``.
    The exit code is pytest's. A corrupt coverage report is reported (exit 2 when the
    tests themselves passed) but the test results are stored regardless.
    """
    import gc

    from testviper.runner.run import run
    from testviper.runner.summary import format_summary

    s = settings(config)
    result, code = run(s, pytest_args(c), cov=not no_cov)
    print(format_summary(result))
    for warning in result.warnings:
        print(f"testviper: warning: {warning}", file=sys.stderr)
    if result.coverage_error is not None:
        print(f"testviper: error: {result.coverage_error}", file=sys.stderr)
        if code == 0:
            code = result.coverage_error.exit_code
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

    rows = list_runs(connect(settings(config, check_paths=False)), limit)
    if not rows:
        print("no runs yet; `inv run` records one")
        return
    print(
        f"{'run id':<36}  {'started (UTC)':<19}  {'status':<10}  {'exit':>4}  "
        f"{'tests':>6}  {'fail':>5}  {'cover':>7}  branch"
    )
    for r in rows:
        cover = f"{r.cov_percent:.2f}" if r.cov_percent is not None else "-"
        print(
            f"{r.id:<36}  {r.started_at:%Y-%m-%d %H:%M:%S}  {r.status:<10}  "
            f"{'' if r.exit_code is None else r.exit_code:>4}  {r.tests_total:>6}  "
            f"{r.failed + r.errors:>5}  {cover:>7}  {r.git_branch or '-'}"
        )


@task(
    positional=["run_id"], help={"config": CONFIG_HELP, "run_id": "run id, a prefix, or 'latest'"}
)
@user_errors
def show(c: Context, run_id: str, config: str | None = None) -> None:
    """Show one run: metadata, coverage by component, failing tests."""
    from testviper.history.store import find_run, run_details
    from testviper.runner.run import connect

    history = connect(settings(config, check_paths=False))
    r = find_run(history, run_id)
    components, problems = run_details(history, r.id)
    print(f"run       {r.id}")
    print(f"project   {r.project}" + (f" ({r.label})" if r.label else ""))
    print(f"status    {r.status}, exit {r.exit_code}")
    print(
        f"started   {r.started_at:%Y-%m-%d %H:%M:%S} UTC, {r.duration:.1f} s"
        if r.duration is not None
        else f"started   {r.started_at} UTC"
    )
    print(
        f"git       {r.git_branch or '-'} {r.git_commit or '-'}"
        + (" (dirty)" if r.git_dirty else "")
    )
    print(f"host      {r.host}, Python {r.python}")
    print(
        f"tests     {r.tests_total} total: {r.passed} passed, {r.failed} failed, "
        f"{r.errors} errors, {r.skipped} skipped, {r.xfailed} xfailed, {r.xpassed} xpassed"
    )
    if r.cov_percent is not None:
        print(
            f"coverage  {r.cov_percent:.2f} % ({r.cov_statements} statements, "
            f"{r.cov_missing} missed)"
        )
    for comp in components:
        pct = f"{comp.percent:.2f} %" if comp.percent is not None else "n/a"
        print(f"  {comp.component:<20} {pct:>9}  ({comp.files} files)")
    for t in problems:
        first = (t.message or "").strip().splitlines()[-1:] or [""]
        print(f"{t.outcome.upper():<8} {t.nodeid}  {first[0][:120]}")
    print(f"run dir   {r.run_dir}")


@task(
    positional=["run_dir"],
    help={"config": CONFIG_HELP, "run_dir": "a directory under <state>/runs/"},
)
@user_errors
def ingest(c: Context, run_dir: str, config: str | None = None) -> None:
    """Store (again) a run directory in history, e.g. after the runner itself was killed."""
    from pathlib import Path

    from testviper.runner.run import ingest as ingest_run
    from testviper.runner.summary import format_summary

    result = ingest_run(settings(config), Path(run_dir).resolve())
    print(format_summary(result))
    for warning in result.warnings:
        print(f"testviper: warning: {warning}", file=sys.stderr)
    if result.coverage_error is not None:
        raise Exit(f"testviper: error: {result.coverage_error}", code=2)


runs = Collection("runs", list_, show, ingest)
