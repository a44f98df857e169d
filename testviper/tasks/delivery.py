"""``inv sync`` and ``inv deliveries``: replay the outbox, list delivery states."""

import sys
from typing import TYPE_CHECKING, Any

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors

if TYPE_CHECKING:
    from testviper.reporter.deliver import DeliveryResult


def print_result(result: "DeliveryResult") -> None:
    """One line per instance: delivered (stdout) or a warning (stderr)."""
    if result.ok:
        print(f"delivered to {result.instance}: launch {result.launch_uuid} ({result.tests} tests)")
    else:
        print(
            f"testviper: warning: delivery to {result.instance} failed: {result.error}; "
            "kept in the outbox, `inv sync` retries",
            file=sys.stderr,
        )
    for warning in result.warnings:
        print(f"testviper: warning: {warning}", file=sys.stderr)


def check_keys(s: Any) -> None:
    """Exit 2 before anything runs if an enabled instance has no API key.

    Only the settings are asked: importing the delivery code here would load SQLAlchemy
    before pytest starts, a tenth of a second of every `inv run`.
    """
    from testviper.errors import UserError

    for name, variable in s.missing_keys():
        raise UserError(
            f"reportportal instance '{name}': its API key variable {variable} is not set "
            "(set it in the environment or .env, disable the instance, or use --no-deliver)"
        )


def deliver_run(s: Any, run_id: str, run_dir: str, handovers: dict[str, Any] | None = None) -> bool:
    """Deliver a stored run to every enabled instance; print a line each. True if all ok.

    ``handovers``: what the live streams left, by instance.
    """
    if not s.enabled_instances:
        return True  # without loading the delivery code, a hundredth of a second
    from pathlib import Path

    from testviper.reporter.deliver import deliver_all

    results = deliver_all(s, run_id, Path(run_dir), handovers=handovers)
    for result in results:
        print_result(result)
    return all(r.ok for r in results)


@task(
    help={
        "config": CONFIG_HELP,
        "instance": "replay only this instance's outbox",
    }
)
@user_errors
def sync(c: Context, config: str | None = None, instance: str | None = None) -> None:
    """Deliver what is in the outbox (oldest run first): exit 0 when it is empty afterwards.

    Each entry resumes where its last attempt stopped; the launch's fixed UUIDs make
    anything sent twice harmless.
    """
    from testviper.errors import UserError
    from testviper.ops.locks import job_lock
    from testviper.reporter.deliver import sync as replay

    s = settings(config, check_paths=False)
    names = [inst.name for inst in s.config.reportportal.instances]
    if instance is not None and instance not in names:
        raise UserError(
            f"--instance {instance}: no such ReportPortal instance "
            f"(configured: {', '.join(names) or 'none'})"
        )
    with job_lock(s.state_dir, "sync"):  # a second sync (cron + by hand) exits 75
        outcomes = replay(s, instance)
    if not outcomes:
        print("outbox empty: nothing to deliver")
        return
    left = 0
    for outcome in outcomes:
        if isinstance(outcome, str):
            print(f"testviper: warning: {outcome}", file=sys.stderr)
            left += 1
            continue
        if outcome.status == "busy":
            print(
                f"run {outcome.run_id} to {outcome.instance}: {outcome.error}; skipped",
                file=sys.stderr,
            )
            left += 1
        elif outcome.ok:
            print(
                f"delivered run {outcome.run_id} to {outcome.instance}: "
                f"launch {outcome.launch_uuid} ({outcome.tests} tests)"
            )
        else:
            left += 1
            print_result(outcome)
    if left:
        raise Exit(f"testviper: {left} deliveries still in the outbox", code=1)


@task(help={"config": CONFIG_HELP, "limit": "how many rows (newest run first)"})
@user_errors
def deliveries(c: Context, config: str | None = None, limit: int = 50) -> None:
    """List deliveries per run and instance: status, attempts, last error, launch UUID."""
    from testviper.reporter.outbox import list_deliveries
    from testviper.runner.run import connect

    rows = list_deliveries(connect(settings(config, check_paths=False)), limit)
    if not rows:
        print("no deliveries recorded")
        return
    width = max(len(r.instance) for r in rows)
    for r in rows:
        error = f"  {r.last_error}" if r.last_error else ""
        print(
            f"{r.run_id}  {r.instance:<{width}}  {r.status:<9}  attempts {r.attempts}  "
            f"launch {r.launch_uuid or '-'}{error}"
        )
