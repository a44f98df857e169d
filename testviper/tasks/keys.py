"""``inv rotate-keys``: put a new ReportPortal API key in ``.env``; ``--check`` key ages."""

import sys

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(
    name="rotate-keys",
    auto_shortflags=False,  # long options only: no `-h` that is not help
    help={
        "config": CONFIG_HELP,
        "instance": "the ReportPortal instance whose key to replace",
        "stdin": "read the new key from stdin (the default when stdin is not a terminal)",
        "from_env": "read the new key from this environment variable (give its name)",
        "no_overlap": "drop the old key instead of keeping it as <VAR>_PREVIOUS",
        "revoke_old": "revoke the old key on the server (else: print the manual step)",
        "check": "report each instance's key age; exit 1 past reportportal.max_key_age_days",
    },
)
@user_errors
def rotate_keys(
    c: Context,
    config: str | None = None,
    instance: str | None = None,
    stdin: bool = False,
    from_env: str | None = None,
    no_overlap: bool = False,
    revoke_old: bool = False,
    check: bool = False,
) -> None:
    """Replace an instance's API key in .env after checking it against the server.

    The key is read from stdin or from the variable named by --from-env, never from the
    command line. A key the server rejects changes nothing (exit 1). .env is rewritten
    atomically with its mode, owner and other lines; the old key stays as <VAR>_PREVIOUS
    unless --no-overlap. History records the rotation with key fingerprints only.
    """
    import os

    from testviper.errors import UserError

    s = settings(config, check_paths=False)
    if check:
        _check(s, instance)
        return
    if not instance:
        raise UserError("--instance: name the ReportPortal instance whose key to rotate")
    from testviper.ops import keys

    inst = keys.find_instance(s, instance)
    if stdin and from_env:
        raise UserError("give --stdin or --from-env, not both")
    if from_env:
        from testviper.config_file import ENV_NAME

        if not ENV_NAME.match(from_env):
            raise UserError(
                f"--from-env: '{from_env}' is not a variable name; give the name of the "
                "variable that holds the key, never the key"
            )
        new = keys.parse_key(os.environ.get(from_env, ""), f"--from-env {from_env}")
    elif stdin or not sys.stdin.isatty():
        new = keys.parse_key(sys.stdin.read(), "stdin")
    else:
        import getpass

        new = keys.parse_key(getpass.getpass(f"New API key for {inst.name}: "), "prompt")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Before anything else: later log lines with the key are then masked by the runner.
        print(f"::add-mask::{new}", flush=True)
    done = keys.rotate(s, inst, new, overlap=not no_overlap, revoke_old=revoke_old)
    previous = f" (was {done.previous_fingerprint})" if done.previous_fingerprint else ""
    print(
        f"instance {done.instance}: new key {done.fingerprint}{previous} verified and written "
        f"to {done.path} as {done.variable}" + (" (new file, mode 0600)" if done.created else "")
    )
    if done.overlap:
        print(
            f"the old key stays in {done.variable}_PREVIOUS for the overlap window; "
            "revoke it when nothing uses it any more"
        )
    elif done.previous_fingerprint and done.old_key != "revoked":
        print("the old key was dropped from .env; it stays valid on the server until revoked")
    for note in done.notes:
        print(note)
    for warning in done.warnings:
        print(f"testviper: warning: {warning}", file=sys.stderr)


def _check(s: object, instance: str | None) -> None:
    from testviper.ops import keys

    ages = keys.key_ages(s)  # type: ignore[arg-type]
    if instance is not None:
        keys.find_instance(s, instance)  # type: ignore[arg-type]
        ages = [a for a in ages if a.instance == instance]
    if not ages:
        print("no ReportPortal instances configured")
        return
    limit = s.config.reportportal.max_key_age_days  # type: ignore[attr-defined]
    old = 0
    for age in ages:
        if not age.is_set:
            state = "not set"
        elif age.days is None:
            state = "age unknown (no rotation recorded, no .env)"
        else:
            state = f"{age.days:.0f} days old (since {age.since:%Y-%m-%d}, {age.source})"
        print(f"{age.instance}: {age.variable} {state}")
        if age.too_old:
            old += 1
            print(
                f"testviper: warning: the key of {age.instance} is older than "
                f"reportportal.max_key_age_days ({limit}); rotate it with "
                f"`inv rotate-keys --instance {age.instance}`",
                file=sys.stderr,
            )
    if old:
        raise Exit(code=1)
