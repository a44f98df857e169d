"""The ``alert`` collection: ``inv alert.test`` sends a test message to the channels."""

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(
    name="test",
    default=True,
    help={
        "config": CONFIG_HELP,
        "channel": "only this channel (default: every configured channel)",
        "message": "text of the test message (default: a fixed one naming host and project)",
    },
)
@user_errors
def test_(
    c: Context, config: str | None = None, channel: str | None = None, message: str | None = None
) -> None:
    """Send a test message to the alert channels; exit 1 if any channel failed.

    The test message ignores min_severity and the dedup window. A channel whose URL
    variable is unset or not https (except to loopback) is a configuration error (exit 2).
    """
    import socket

    from testviper.ops import alerts

    s = settings(config, check_paths=False)
    text = message or f"TestViper alert test from {socket.gethostname()} ({s.project_name})"
    outcomes = alerts.notify(s, "info", "TestViper alert test", text, channel=channel, test=True)
    for outcome in outcomes:
        print(outcome.line())
    failed = [o.channel for o in outcomes if o.status == "failed"]
    if failed:
        raise Exit(f"testviper: error: alert not delivered to {', '.join(failed)}", code=1)


alert = Collection("alert", test_)
