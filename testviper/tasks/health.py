"""``inv health`` and ``inv diagnose``: Nagios-style checks with exit codes 0/1/2/3.

The status line goes to stdout, then the details; the exit code is the worst state.
Anything unexpected is UNKNOWN (exit 3), never a traceback: Nagios reads exit 1 as
WARNING, which a crash of the check is not.
"""

from typing import Any

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP


def _output(report: Any, settings: Any, as_json: bool, render: Any = None) -> str:
    """The text to print, with every configured key value masked."""
    from testviper.ops import health

    secrets = health.secrets_of(settings)
    health.mask_report(report, secrets)
    render = render or (lambda r: r.nagios())
    out = report.to_json() if as_json else render(report)
    return health.masked(out, secrets)  # type: ignore[no-any-return]


def _crash_output(exc: BaseException, kind: str, as_json: bool) -> tuple[str, int]:
    from testviper.ops import health

    report = health.crash_report(exc, kind)
    return (report.to_json() if as_json else report.nagios()), report.exit_code


def _emit(text: str, code: int) -> None:
    import os
    import sys

    try:
        print(text, flush=True)
    except BrokenPipeError:  # `| head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if code:
        raise Exit(code=code)


@task(
    help={
        "config": CONFIG_HELP,
        "json": "print one JSON document instead of the Nagios-style text",
    }
)
def health(c: Context, config: str | None = None, json: bool = False) -> None:
    """Check config, ReportPortal, outbox, last run, disk, history; exit 0/1/2/3 (Nagios).

    First line: `TESTVIPER OK|WARNING|CRITICAL|UNKNOWN - summary | perfdata`, then one
    line per check. Limits come from the config's `health` section.
    """
    try:
        from testviper.ops import health as ops

        report, settings = ops.run_health(config)
        text, code = _output(report, settings, json), report.exit_code
    except Exception as exc:  # a bug in the checks: UNKNOWN, not a traceback
        text, code = _crash_output(exc, "health", json)
    _emit(text, code)


@task(
    help={
        "config": CONFIG_HELP,
        "json": "print one JSON document instead of text",
        "path": "also show which component this test path maps to",
    }
)
def diagnose(
    c: Context, config: str | None = None, path: str | None = None, json: bool = False
) -> None:
    """Health checks plus dependencies, env, permissions, sources, RP connection trace.

    Everything `health` checks, plus installed dependency versions against the pinned
    ranges, the environment variables that matter (values masked), permissions of .env
    and the config file, coverage source directories, a timed DNS/TCP/TLS/HTTP/auth
    trace per ReportPortal instance, and a one-line fix for each problem.

    Exit codes as `health`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    """
    try:
        from testviper.ops import diagnose as ops

        report, settings = ops.run_diagnose(config, path)
        text, code = _output(report, settings, json, ops.render), report.exit_code
    except Exception as exc:
        text, code = _crash_output(exc, "diagnose", json)
    _emit(text, code)
