"""``inv rp.check``, ``inv rp.launches``, ``inv rp.cleanup``: ask the ReportPortal instances."""

import json as jsonlib
import sys
from typing import Any

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


def _yes_no(value: bool | None, yes: str, no: str) -> str:
    return "-" if value is None else (yes if value else no)


def _targets(s: Any, instance: str | None) -> list[Any]:
    from testviper.config import warn_insecure
    from testviper.errors import UserError
    from testviper.reporter.queries import instances_named

    targets = instances_named(s, [instance] if instance else None)
    if not targets:
        raise UserError(
            f"{s.source}: no enabled ReportPortal instance (configure reportportal.instances)"
        )
    warn_insecure(targets)
    return targets


@task(
    help={
        "config": CONFIG_HELP,
        "instance": "check only this instance (default: every enabled one)",
        "json": "print a JSON list instead of one line per instance",
    }
)
@user_errors
def check(c: Context, config: str | None = None, instance: str | None = None, json: bool = False):
    """Per instance: reachable, API key accepted, project exists, latency, server version.

    Exit 0 when every instance is usable, 1 otherwise, 2 on a configuration error.
    """
    from testviper.reporter.queries import check_all

    s = settings(config, check_paths=False)
    targets = _targets(s, instance)
    checks = check_all(s, [t.name for t in targets])
    if json:
        print(jsonlib.dumps([x.as_dict() for x in checks], indent=2))
    else:
        width = max(len(x.name) for x in checks)
        for x in checks:
            latency = f"{x.latency_ms:.1f} ms" if x.latency_ms is not None else "-"
            line = (
                f"{x.name:<{width}}  {'ok' if x.ok else 'FAIL':<4}  "
                f"reachable {_yes_no(x.reachable, 'yes', 'no')}  "
                f"key {_yes_no(x.key_accepted, 'accepted', 'rejected')}  "
                f"project {_yes_no(x.project_exists, 'found', 'missing')}  "
                f"latency {latency}  version {x.version or '-'}"
            )
            print(line + (f"  error: {x.error}" if x.error else ""))
    if not all(x.ok for x in checks):
        raise Exit(code=1)


def _when(launch: Any) -> str:
    return launch.start.strftime("%Y-%m-%d %H:%M:%S") if launch.start else "-"


def _stats(launch: Any) -> str:
    st = launch.statistics
    return (
        f"total {st.get('total', 0)} passed {st.get('passed', 0)} "
        f"failed {st.get('failed', 0)} skipped {st.get('skipped', 0)}"
    )


@task(
    help={
        "config": CONFIG_HELP,
        "instance": "list this instance's launches (default: every enabled one)",
        "limit": "how many launches per instance, newest first (default 20)",
    }
)
@user_errors
def launches(c: Context, config: str | None = None, instance: str | None = None, limit: int = 20):
    """The recent launches of an instance: name, number, status, start, statistics, UUID."""
    from testviper.reporter.api import DeliveryError
    from testviper.reporter.queries import recent_launches

    s = settings(config, check_paths=False)
    failed = None
    for inst in _targets(s, instance):
        try:
            found = recent_launches(s, inst, limit)
        except DeliveryError as exc:
            print(f"testviper: error: {inst.name}: {exc.reason}", file=sys.stderr)
            failed = inst.name
            continue
        print(f"{inst.name} ({inst.endpoint}, project {inst.project}): {len(found)} launches")
        for x in found:
            print(
                f"  {x.name} #{x.number if x.number is not None else '-'}  {x.status:<11}  "
                f"{_when(x)}  {_stats(x)}  {x.uuid}"
            )
    if failed:
        raise Exit(code=1)


@task(
    help={
        "config": CONFIG_HELP,
        "instance": "clean only this instance (default: every enabled one)",
        "older_than": "age of the launches to delete: 90d, 12w, 6m or 1y (required)",
        "apply": "delete for real (default: only list what would be deleted)",
    }
)
@user_errors
def cleanup(
    c: Context,
    older_than: str | None = None,
    config: str | None = None,
    instance: str | None = None,
    apply: bool = False,
):
    """Delete launches started before an age through the API; a dry run unless --apply.

    Launches still in progress are never deleted.
    """
    from testviper.errors import UserError
    from testviper.reporter.api import DeliveryError
    from testviper.reporter.queries import delete_launches, old_launches, parse_age

    if older_than is None:
        raise UserError("--older-than is required (like --older-than 90d)")
    age = parse_age(older_than)
    s = settings(config, check_paths=False)
    failed = False
    for inst in _targets(s, instance):
        try:
            old, running = old_launches(s, inst, age)
        except DeliveryError as exc:
            print(f"testviper: error: {inst.name}: {exc.reason}", file=sys.stderr)
            failed = True
            continue
        verb = "deleting" if apply else "would delete"
        print(f"{inst.name}: {verb} {len(old)} launches older than {older_than}")
        for x in old:
            print(f"  {x.name} #{x.number if x.number is not None else '-'}  {_when(x)}  {x.uuid}")
        if running:
            print(f"{inst.name}: {running} old launches still in progress are kept")
        if not apply or not old:
            continue
        try:
            outcome = delete_launches(s, inst, [x.id for x in old])
        except DeliveryError as exc:
            print(f"testviper: error: {inst.name}: {exc.reason}", file=sys.stderr)
            failed = True
            continue
        print(f"{inst.name}: deleted {len(outcome.removed)} launches")
        for error in outcome.errors:
            print(f"testviper: warning: {inst.name}: {error}", file=sys.stderr)
        if outcome.errors:
            failed = True
    if not apply:
        print("dry run: nothing deleted; add --apply to delete")
    if failed:
        raise Exit(code=1)


rp = Collection("rp", check, launches, cleanup)
