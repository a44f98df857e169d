"""``inv schedule.*``: render ``ops/schedules.yaml`` into cron or systemd timers, check it,
install and uninstall it, show the next runs."""

from invoke import Collection, Context, task

from testviper.tasks.common import CONFIG_HELP, settings, user_errors

SCHEDULES_HELP = "the schedules file (default: ops/schedules.yaml next to the config)"
FORMAT_HELP = "cron (a crontab block or /etc/cron.d file) or systemd (a service + timer per entry)"
RUN_AS_HELP = "user the system jobs run as (default: $SUDO_USER, else the current user)"
NO_SYSTEMCTL_ENV = "TESTVIPER_NO_SYSTEMCTL"


def _load(config: str | None, schedules: str | None, example: bool = False) -> tuple:
    """(entries, target) from the config and the schedules file."""
    import getpass
    import os
    import shutil
    import sys
    from pathlib import Path

    from testviper.ops import schedules as sched

    s = settings(config, check_paths=False)
    path = Path(schedules).expanduser().resolve() if schedules else s.root / sched.SCHEDULES
    entries = sched.load(path)
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


def _format(value: str) -> str:
    from testviper.errors import UserError

    if value not in ("cron", "systemd"):
        raise UserError(f"--format: expected cron or systemd, got {value!r}")
    return value


def _scope(user: bool, system: bool) -> str:
    from testviper.errors import UserError

    if user == system:
        raise UserError("give exactly one of --user (your own crontab/units) or --system")
    return "system" if system else "user"


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

    entries, target = _load(config, schedules, example)
    if run_as:
        target.user = run_as
    if _format(format) == "cron":
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
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from invoke.exceptions import Exit

    from testviper.errors import UserError
    from testviper.ops import schedules as sched

    entries, target = _load(config, schedules)
    base = sched.now_utc()
    failed = 0
    for entry in entries:
        result = sched.compare(entry, base)
        if result.ok:
            print(f"{entry.name}: ok  {entry.cron!r} = OnCalendar={entry.on_calendar!r}")
        else:
            failed += 1
            print(f"{entry.name}: DIFFERENT  {entry.cron!r} vs OnCalendar={entry.on_calendar!r}")
            for a, b in zip(result.cron, result.systemd, strict=False):
                mark = "  " if a == b else "!="
                print(f"    cron {a:%Y-%m-%d %H:%M %Z}  {mark}  systemd {b:%Y-%m-%d %H:%M %Z}")
    units = sched.render_units(entries, target, system=True)
    with tempfile.TemporaryDirectory(prefix="testviper-units-") as tmp:
        done = sched.verify_units(units, Path(tmp))
    if done.returncode == 0 and not done.stderr.strip():
        print(f"systemd-analyze verify: ok ({len(units)} units)")
    else:
        failed += 1
        print(f"systemd-analyze verify: FAILED (exit {done.returncode})")
        print(done.stderr.rstrip())
    crontab = shutil.which("crontab")
    try:
        text = sched.render_cron(entries, target)
    except UserError as exc:
        print(f"crontab: not checked ({exc})")
        text = None
    if text is not None and crontab is None:
        print("crontab -n: skipped (Debian's cron is not installed)")
    elif text is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".crontab") as handle:
            handle.write(text)
            handle.flush()
            done = subprocess.run(
                [crontab, "-n", handle.name], capture_output=True, text=True, check=False
            )
        if done.returncode == 0:
            print("crontab -n: ok")
        else:
            failed += 1
            print(f"crontab -n: FAILED {(done.stderr or done.stdout).strip()}")
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
    "no_systemctl": f"do not call systemctl (also: {NO_SYSTEMCTL_ENV}=1)",
    "run_as": RUN_AS_HELP,
}


class _Plan:
    """Where an install of one format and scope goes, and how to tell systemd."""

    def __init__(self, fmt: str, scope: str, unit_dir: str | None, cron_dir: str | None) -> None:
        import os
        from pathlib import Path

        self.format, self.scope, self.key = fmt, scope, f"{fmt}-{scope}"
        if fmt == "systemd":
            if unit_dir:
                self.dir = Path(unit_dir).expanduser().resolve()
            elif scope == "user":
                base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
                self.dir = Path(base) / "systemd" / "user"
            else:
                self.dir = Path("/etc/systemd/system")
        else:
            self.dir = Path(cron_dir or "/etc/cron.d").expanduser().resolve()

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.scope == "user" else []), *args]


def _systemctl(commands: list[list[str]], skip: bool, dry_run: bool) -> None:
    import subprocess

    from testviper.errors import UserError

    for command in commands:
        if dry_run:
            print(f"would run: {' '.join(command)}")
        elif skip:
            print(f"skipped (systemctl disabled): {' '.join(command)}")
        else:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 and command[-2:-1] != ["--what=state"]:
                raise UserError(f"{' '.join(command)} failed: {done.stderr.strip()}")
            print(f"ran: {' '.join(command)}")


def _skip_systemctl(option: bool) -> bool:
    import os

    return option or os.environ.get(NO_SYSTEMCTL_ENV, "") not in ("", "0")


def _crontab_binary() -> str:
    import shutil

    from testviper.errors import UserError

    found = shutil.which("crontab")
    if found is None:
        raise UserError(
            "crontab not found: install Debian's cron (apt-get install -y cron), "
            "or use --format systemd"
        )
    return found


def _read_crontab() -> str:
    import subprocess

    from testviper.errors import UserError

    done = subprocess.run([_crontab_binary(), "-l"], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    if "no crontab" in done.stderr.lower():
        return ""
    raise UserError(f"crontab -l failed: {done.stderr.strip()}")


def _write_crontab(text: str) -> None:
    import subprocess

    from testviper.errors import UserError

    command = [_crontab_binary(), "-"] if text.strip() else [_crontab_binary(), "-r"]
    done = subprocess.run(command, input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"{' '.join(command)} failed: {done.stderr.strip()}")


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
    from testviper.errors import UserError
    from testviper.fsutil import atomic_write
    from testviper.ops import schedules as sched

    plan = _Plan(_format(format), _scope(user, system), unit_dir, cron_dir)
    entries, target = _load(config, schedules)
    if run_as:
        target.user = run_as
    manifest = sched.read_manifest(target.state)
    old = manifest.get(plan.key, {})
    if plan.format == "cron" and plan.scope == "user":
        block = sched.render_cron(entries, target)
        current = _read_crontab()
        updated = sched.replace_block(current, block)
        if dry_run:
            print(f"would install this block in the crontab of {target.user}:")
            print(block, end="")
            return
        _make_state(target)
        _write_crontab(updated)
        manifest[plan.key] = {"block": sched.sha256(block)}
        sched.write_manifest(target.state, manifest)
        print(f"installed {sum(e.enabled for e in entries)} cron jobs in your crontab")
        return
    if plan.format == "cron":
        files = {sched.CRON_D_NAME: sched.render_cron(entries, target, system=True)}
    else:
        files = sched.render_units(entries, target, system=plan.scope == "system")
    old_files: dict[str, str] = old.get("files", {})
    new_paths = {str(plan.dir / name): text for name, text in files.items()}
    for path, text in new_paths.items():
        p = plan.dir / path
        if p.exists() and path not in old_files and p.read_text(encoding="utf-8") != text:
            raise UserError(
                f"{p} exists and was not installed by schedule.install; "
                "move it away first (nothing was changed)"
            )
    stale = [p for p in old_files if p not in new_paths]
    stale_timers = [p.rsplit("/", 1)[1] for p in stale if p.endswith(".timer")]
    timers = [name for name in files if name.endswith(".timer")]
    skip = _skip_systemctl(no_systemctl)
    if dry_run:
        for path in new_paths:
            print(f"would write {path}")
        for path in stale:
            print(f"would remove {path}")
    if plan.format == "systemd" and stale_timers:
        _systemctl([plan.systemctl("disable", "--now", *stale_timers)], skip, dry_run)
    if not dry_run:
        _make_state(target)
        plan.dir.mkdir(parents=True, exist_ok=True)
        for path in stale:
            _remove(path, old_files[path])
        for path, text in new_paths.items():
            atomic_write(plan.dir / path, text, mode=0o644)
            print(f"wrote {path}")
        manifest[plan.key] = {
            "dir": str(plan.dir),
            "files": {p: sched.sha256(t) for p, t in new_paths.items()},
            "timers": timers,
        }
        sched.write_manifest(target.state, manifest)
    if plan.format == "systemd":
        commands = [plan.systemctl("daemon-reload")]
        if timers:
            commands.append(plan.systemctl("enable", "--now", *timers))
        _systemctl(commands, skip, dry_run)


def _make_state(target: object) -> None:
    """The state directories the jobs write to (units may write nowhere else)."""
    for sub in ("locks", "logs"):
        (target.state / sub).mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]


def _remove(path: str, digest: str) -> None:
    import sys
    from pathlib import Path

    from testviper.ops import schedules as sched

    p = Path(path)
    if not p.exists():
        return
    if sched.sha256(p.read_text(encoding="utf-8")) != digest:
        print(f"testviper: warning: {p} changed since install; left in place", file=sys.stderr)
        return
    p.unlink()
    print(f"removed {p}")


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
    from testviper.ops import schedules as sched

    plan = _Plan(_format(format), _scope(user, system), unit_dir, cron_dir)
    s = settings(config, check_paths=False)
    manifest = sched.read_manifest(s.state_dir)
    record = manifest.get(plan.key)
    if plan.format == "cron" and plan.scope == "user":
        current = _read_crontab()
        updated = sched.replace_block(current, "")
        if updated == current:
            print("nothing to remove: no testviper block in your crontab")
        elif dry_run:
            print("would remove the testviper block from your crontab")
        else:
            _write_crontab(updated)
            print("removed the testviper block from your crontab")
    elif record is None:
        print(f"nothing to remove: no {plan.format} {plan.scope} install recorded")
        return
    else:
        timers = record.get("timers", [])
        skip = _skip_systemctl(no_systemctl)
        if plan.format == "systemd" and timers:
            _systemctl(
                [
                    plan.systemctl("disable", "--now", *timers),
                    plan.systemctl("clean", "--what=state", *timers),
                ],
                skip,
                dry_run,
            )
        for path, digest in record.get("files", {}).items():
            if dry_run:
                print(f"would remove {path}")
            else:
                _remove(path, digest)
        if plan.format == "systemd":
            _systemctl([plan.systemctl("daemon-reload")], skip, dry_run)
    if not dry_run and record is not None:
        del manifest[plan.key]
        sched.write_manifest(s.state_dir, manifest)


schedule = Collection("schedule", render, check, show, install, uninstall)
