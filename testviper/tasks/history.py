"""``inv history.import-rp``: rebuild history from a ReportPortal instance's launches."""

import sys

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(
    help={
        "config": CONFIG_HELP,
        "instance": "the ReportPortal instance to read the launches from (required)",
        "since": "window: launches started within this period, like 12h, 30d or 2w (default 30d)",
    }
)
@user_errors
def import_rp(
    c: Context, instance: str | None = None, since: str = "30d", config: str | None = None
):
    """Rebuild history runs (tests, coverage percentages, git) from an instance's launches.

    Runs already in history are skipped, so importing again adds nothing. Launches carry
    coverage percentages only: imported runs have no per-file coverage. Exit 0 when the
    instance answered, 1 when it failed to, 2 on a usage or configuration error.
    """
    from testviper.analytics.core import parse_since
    from testviper.config import warn_insecure
    from testviper.errors import UserError
    from testviper.reporter.api import DeliveryError
    from testviper.reporter.queries import instances_named
    from testviper.reporter.recover import import_launches

    if not instance:
        raise UserError("--instance is required (the name of a configured ReportPortal instance)")
    window = parse_since(since)
    s = settings(config, check_paths=False)
    (inst,) = instances_named(s, [instance])
    warn_insecure([inst])
    try:
        result = import_launches(s, inst, window)
    except DeliveryError as exc:
        print(f"testviper: error: {inst.name}: {exc.reason}", file=sys.stderr)
        raise Exit(code=1) from None
    print(
        f"{inst.name}: imported {len(result.imported)} runs ({result.tests} tests), "
        f"skipped {len(result.skipped)} already in history"
        + (f", {result.in_progress} launches still in progress left" if result.in_progress else "")
    )
    for run_id in result.imported:
        print(f"  imported {run_id}")
    if result.imported:
        print("coverage came back as percentages only: imported runs have no per-file rows")


history = Collection("history", import_rp)
