"""``inv daily`` / ``weekly`` / ``monthly`` (the scheduled routines) and ``inv ci-status``."""

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors

ROUTINE_HELP = {
    "config": CONFIG_HELP,
    "step": "run only this step (repeatable; default: the routines.<name> list of the config)",
    "no_alert": "do not send the summary to the alert channels",
}


def _routine(config: str | None, name: str, step: list[str], no_alert: bool) -> None:
    import functools

    from testviper.ops.routines import run_routine

    emit = functools.partial(print, flush=True)  # cron logs show each step as it ends
    result = run_routine(
        settings(config, check_paths=False), name, only=step or None, emit=emit, alert=not no_alert
    )
    if result.exit_code:
        raise Exit(code=result.exit_code)


@task(help=ROUTINE_HELP, iterable=["step"])
@user_errors
def daily(
    c: Context, config: str | None = None, step: list[str] | None = None, no_alert: bool = False
) -> None:
    """Health, outbox sync, gate verdict, CI runs, daily digest and reports; alert on problems.

    Steps (routines.daily): health, sync, gate, ci, digest, reports. One line per step
    with its state and duration; a failing step does not stop the others; the summary
    goes to the alert channels. A failed gate is a WARNING here: failing builds is
    `inv gate`'s job in CI.

    Exit: the worst step's state, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios);
    75 when another run holds the lock; 2 for a configuration error.
    """
    _routine(config, "daily", step or [], no_alert)


@task(help=ROUTINE_HELP, iterable=["step"])
@user_errors
def weekly(
    c: Context, config: str | None = None, step: list[str] | None = None, no_alert: bool = False
) -> None:
    """Weekly digest, coverage trends, flaky and slow tests, thresholds vs observed coverage.

    Steps (routines.weekly): digest, trends, flaky, slow, config.

    Exit: the worst step's state, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios);
    75 when another run holds the lock; 2 for a configuration error.
    """
    _routine(config, "weekly", step or [], no_alert)


@task(help=ROUTINE_HELP, iterable=["step"])
@user_errors
def monthly(
    c: Context, config: str | None = None, step: list[str] | None = None, no_alert: bool = False
) -> None:
    """Monthly digest, threshold suggestions, duration growth, outdated and vulnerable packages.

    Steps (routines.monthly): digest, suggestions, durations, outdated (pip list
    --outdated), audit (pip-audit, when installed).

    Exit: the worst step's state, 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios);
    75 when another run holds the lock; 2 for a configuration error.
    """
    _routine(config, "monthly", step or [], no_alert)


@task(
    help={
        "config": CONFIG_HELP,
        "workflow": "workflow file name (ci.yml) or id (default: github.workflow)",
        "limit": "how many runs, newest first (1..100; default: github.limit)",
        "branch": "only runs of this branch (default: github.branch, else every branch)",
        "json": "print one JSON document instead of text",
    }
)
@user_errors
def ci_status(
    c: Context,
    config: str | None = None,
    workflow: str | None = None,
    limit: int = 0,
    branch: str | None = None,
    json: bool = False,
) -> None:
    """Recent GitHub Actions runs of a workflow and their conclusions (GitHub REST API).

    Repository, workflow and API URL come from the config's `github` section; the token
    from the variable it names (default GITHUB_TOKEN), never from the command line.
    Exit 0 listed, 1 GitHub unreachable or failing, 2 configuration, token or not found.
    """
    import json as json_module

    from testviper.ops import ci_status as ops

    try:
        listing = ops.fetch_runs(settings(config, check_paths=False), workflow, branch, limit)
    except ops.CIStatusError as exc:
        raise Exit(f"testviper: error: {exc}", code=1) from None
    print(json_module.dumps(listing.to_dict(), indent=2) if json else ops.render(listing))
