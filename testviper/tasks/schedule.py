"""``inv schedule.*``: render ``ops/schedules.yaml`` into cron or systemd timers, check it,
install and uninstall it, show the next runs."""

from invoke import Collection, Context, task

from testviper.tasks.common import CONFIG_HELP, settings, user_errors

SCHEDULES_HELP = "the schedules file (default: ops/schedules.yaml next to the config)"
FORMAT_HELP = "cron (a crontab block or /etc/cron.d file) or systemd (a service + timer per entry)"
RUN_AS_HELP = "user the system jobs run as (default: $SUDO_USER, else the current user)"


def _load(config: str | None, schedules: str | None, example: bool = False) -> tuple:
    """(entries, target) from the config and the schedules file."""
    import getpass
    import os
    import shutil
    import sys
    from pathlib import Path

    from testviper.ops import schedules as sched
    from testviper.tasks import ns

    s = settings(config, check_paths=False)
    path = Path(schedules).expanduser().resolve() if schedules else s.root / sched.SCHEDULES
    entries = sched.load(path, ns)
    if example:
        target = sched.Target(**vars(sched.EXAMPLE))
        target.user = "testviper"
        return entries, target
    beside = Path(sys.executable).parent / "testviper"
    found = shutil.which("testviper")
    executable = beside if beside.exists() else Path(found).resolve() if found else beside
    default_config = s.root / "testviper.yaml"
    target = sched.Target(
        root=s.root,
        state=s.state_dir,
        executable=executable,
        user=os.environ.get("SUDO_USER") or getpass.getuser(),
        config=s.path if s.path is not None and s.path != default_config else None,
    )
    return entries, target


@task(
    help={
        "config": CONFIG_HELP,
        "schedules": SCHEDULES_HELP,
        "format": FORMAT_HELP,
        "output": "write the files into this directory instead of printing them",
        "system": "render for the system: /etc/cron.d format (with user field), units with User=",
        "run_as": RUN_AS_HELP,
        "example": "render with the example paths under /srv/testviper (crontab.example)",
    }
)
@user_errors
def render(
    c: Context,
    format: str = "cron",
    output: str | None = None,
    system: bool = False,
    run_as: str | None = None,
    example: bool = False,
    config: str | None = None,
    schedules: str | None = None,
) -> None:
    """Render the schedules as crontab lines or systemd units (stdout, or --output DIR).

    The crontab block is marked `# BEGIN testviper` / `# END testviper`; with --system it
    is the content of /etc/cron.d/testviper. Regenerate the shipped example with
    `inv schedule.render --format cron --example > crontab.example`.
    """
    from pathlib import Path

    from testviper.fsutil import atomic_write
    from testviper.ops import schedules as sched
    from testviper.ops.schedule_install import check_format

    entries, target = _load(config, schedules, example)
    if run_as:
        target.user = run_as
    if check_format(format) == "cron":
        files = {
            sched.CRON_D_NAME if system else "crontab": sched.render_cron(entries, target, system)
        }
    else:
        files = sched.render_units(entries, target, system)
    if output is None:
        print("\n".join(files.values()) if format == "cron" else _joined(files), end="")
        return
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write(directory / name, text, mode=0o644)
        print(f"wrote {directory / name}")


def _joined(files: dict[str, str]) -> str:
    return "\n".join(f"# ---- {name}\n{text}" for name, text in files.items())


@task(help={"config": CONFIG_HELP, "schedules": SCHEDULES_HELP})
@user_errors
def check(c: Context, config: str | None = None, schedules: str | None = None) -> None:
    """Prove the renderings: cron and systemd fire at the same times, units verify, crontab parses.

    For every entry the next 8 fire times from croniter must equal those of
    `systemd-analyze calendar` for the translated OnCalendar (same time zone); the
    rendered units must pass `systemd-analyze verify` without a word on stderr; the
    crontab is checked with `crontab -n` when Debian's cron is installed. Exit 1 on a
    difference.
    """
    from invoke.exceptions import Exit

    from testviper.ops import schedules as sched

    entries, target = _load(config, schedules)
    failed = 0
    for line, ok in sched.check_renderings(entries, target):
        print(line, flush=True)
        failed += not ok
    if failed:
        raise Exit(f"testviper: schedule check: {failed} problem(s)", code=1)


@task(help={"config": CONFIG_HELP, "schedules": SCHEDULES_HELP, "count": "runs to list per entry"})
@user_errors
def show(
    c: Context, config: str | None = None, schedules: str | None = None, count: int = 3
) -> None:
    """List the schedule entries with their next run times."""
    from testviper.ops import schedules as sched

    entries, _ = _load(config, schedules)
    base = sched.now_utc()
    for entry in entries:
        state = "" if entry.enabled else "  (disabled)"
        zone = f" {entry.timezone}" if entry.timezone else " (system time zone for cron)"
        print(f"{entry.name}: testviper {' '.join(entry.argv)}{state}")
        print(f"    cron {entry.cron!r}{zone}; OnCalendar={entry.on_calendar}")
        extra = []
        if entry.random_delay:
            extra.append(f"random delay {sched.span_text(entry.random_delay)}")
        extra.append(f"timeout {sched.span_text(entry.timeout)}")
        print(f"    {', '.join(extra)}")
        for when in entry.next_runs(count, base):
            print(f"    next {when:%a %Y-%m-%d %H:%M %Z}")


INSTALL_HELP = {
    "config": CONFIG_HELP,
    "schedules": SCHEDULES_HELP,
    "format": "systemd (default) or cron",
    "user": "your own: ~/.config/systemd/user, or a block in your crontab",
    "system": "system-wide: /etc/systemd/system, or /etc/cron.d/testviper",
    "dry_run": "print what would change; change nothing",
    "unit_dir": "directory for the unit files (default by --user/--system)",
    "cron_dir": "directory for the system crontab file (default /etc/cron.d)",
    "no_systemctl": "do not call systemctl (also: TESTVIPER_NO_SYSTEMCTL=1)",
    "run_as": RUN_AS_HELP,
}


@task(help=INSTALL_HELP)
@user_errors
def install(
    c: Context,
    user: bool = False,
    system: bool = False,
    format: str = "systemd",
    dry_run: bool = False,
    unit_dir: str | None = None,
    cron_dir: str | None = None,
    no_systemctl: bool = False,
    run_as: str | None = None,
    config: str | None = None,
    schedules: str | None = None,
) -> None:
    """Install the schedules: systemd timers (default) or cron, for --user or --system.

    systemd: the units are written atomically, then `systemctl [--user] daemon-reload`
    and `enable --now` of the timers. cron --user replaces only the testviper block of
    your crontab; cron --system writes /etc/cron.d/testviper. What was written is
    recorded in <state>/schedule/installed.json so that schedule.uninstall removes
    exactly that; units of entries no longer scheduled are removed.
    """
    from testviper.ops import schedule_install as installer

    plan = installer.Plan(format, installer.scope_of(user, system), unit_dir, cron_dir)
    entries, target = _load(config, schedules)
    if run_as:
        target.user = run_as
    installer.install(
        entries, target, plan, dry_run=dry_run, skip=installer.skip_systemctl(no_systemctl)
    )


@task(help={k: v for k, v in INSTALL_HELP.items() if k not in ("run_as", "schedules")})
@user_errors
def uninstall(
    c: Context,
    user: bool = False,
    system: bool = False,
    format: str = "systemd",
    dry_run: bool = False,
    unit_dir: str | None = None,
    cron_dir: str | None = None,
    no_systemctl: bool = False,
    config: str | None = None,
) -> None:
    """Remove exactly what schedule.install wrote (from its manifest); stop the timers first.

    Files changed since the install are left in place with a warning.
    """
    from testviper.ops import schedule_install as installer

    plan = installer.Plan(format, installer.scope_of(user, system), unit_dir, cron_dir)
    state = settings(config, check_paths=False).state_dir
    installer.uninstall(state, plan, dry_run=dry_run, skip=installer.skip_systemctl(no_systemctl))


schedule = Collection("schedule", render, check, show, install, uninstall)
