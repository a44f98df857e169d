"""Install and uninstall the rendered schedule: systemd units or cron, user or system.

What an install writes is recorded in ``<state>/schedule/installed.json`` (see
``schedules.read_manifest``), so an uninstall removes exactly that, and a reinstall
removes the units of entries that left the schedule. Files changed by hand since the
install are left in place with a warning. Progress goes to ``say`` (stdout by default).
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from testviper.errors import UserError
from testviper.fsutil import atomic_write
from testviper.ops import schedules as sched

NO_SYSTEMCTL_ENV = "TESTVIPER_NO_SYSTEMCTL"
Say = Callable[[str], None]


def check_format(value: str) -> str:
    if value not in ("cron", "systemd"):
        raise UserError(f"--format: expected cron or systemd, got {value!r}")
    return value


class Plan:
    """Where an install of one format and scope goes, and how to tell systemd."""

    def __init__(self, fmt: str, scope: str, unit_dir: str | None, cron_dir: str | None) -> None:
        self.format, self.scope, self.key = check_format(fmt), scope, f"{fmt}-{scope}"
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


def scope_of(user: bool, system: bool) -> str:
    if user == system:
        raise UserError("give exactly one of --user (your own crontab/units) or --system")
    return "system" if system else "user"


def skip_systemctl(option: bool) -> bool:
    """Whether systemctl calls are skipped (the option, or $TESTVIPER_NO_SYSTEMCTL)."""
    return option or os.environ.get(NO_SYSTEMCTL_ENV, "") not in ("", "0")


def _systemctl(commands: list[list[str]], skip: bool, dry_run: bool, say: Say) -> None:
    for command in commands:
        if dry_run:
            say(f"would run: {' '.join(command)}")
        elif skip:
            say(f"skipped (systemctl disabled): {' '.join(command)}")
        else:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 and command[-2:-1] != ["--what=state"]:
                raise UserError(f"{' '.join(command)} failed: {done.stderr.strip()}")
            say(f"ran: {' '.join(command)}")


def _crontab_binary() -> str:
    found = shutil.which("crontab")
    if found is None:
        raise UserError(
            "crontab not found: install Debian's cron (apt-get install -y cron), "
            "or use --format systemd"
        )
    return found


def _read_crontab() -> str:
    done = subprocess.run([_crontab_binary(), "-l"], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    if "no crontab" in done.stderr.lower():
        return ""
    raise UserError(f"crontab -l failed: {done.stderr.strip()}")


def _write_crontab(text: str) -> None:
    command = [_crontab_binary(), "-"] if text.strip() else [_crontab_binary(), "-r"]
    done = subprocess.run(command, input=text, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(f"{' '.join(command)} failed: {done.stderr.strip()}")


def _make_state(target: sched.Target) -> None:
    """The state directories the jobs write to (units may write nowhere else)."""
    for sub in ("locks", "logs"):
        (target.state / sub).mkdir(parents=True, exist_ok=True)


def _remove(path: str, digest: str, say: Say) -> None:
    p = Path(path)
    if not p.exists():
        return
    if sched.sha256(p.read_text(encoding="utf-8")) != digest:
        print(f"testviper: warning: {p} changed since install; left in place", file=sys.stderr)
        return
    p.unlink()
    say(f"removed {p}")


def install(
    entries: list[sched.Entry],
    target: sched.Target,
    plan: Plan,
    *,
    dry_run: bool = False,
    skip: bool = False,
    say: Say = print,
) -> None:
    """Write the rendered schedule for ``plan`` and tell systemd (unless ``skip``)."""
    manifest = sched.read_manifest(target.state)
    old = manifest.get(plan.key, {})
    if plan.format == "cron" and plan.scope == "user":
        block = sched.render_cron(entries, target)
        updated = sched.replace_block(_read_crontab(), block)
        if dry_run:
            say(f"would install this block in the crontab of {target.user}:")
            say(block.rstrip("\n"))
            return
        _make_state(target)
        _write_crontab(updated)
        manifest[plan.key] = {"block": sched.sha256(block)}
        sched.write_manifest(target.state, manifest)
        say(f"installed {sum(e.enabled for e in entries)} cron jobs in your crontab")
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
    if dry_run:
        for path in new_paths:
            say(f"would write {path}")
        for path in stale:
            say(f"would remove {path}")
    if plan.format == "systemd" and stale_timers:
        _systemctl([plan.systemctl("disable", "--now", *stale_timers)], skip, dry_run, say)
    if not dry_run:
        _make_state(target)
        plan.dir.mkdir(parents=True, exist_ok=True)
        for path in stale:
            _remove(path, old_files[path], say)
        for path, text in new_paths.items():
            atomic_write(plan.dir / path, text, mode=0o644)
            say(f"wrote {path}")
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
        _systemctl(commands, skip, dry_run, say)


def uninstall(
    state: Path, plan: Plan, *, dry_run: bool = False, skip: bool = False, say: Say = print
) -> None:
    """Remove exactly what ``install`` recorded for ``plan``; stop the timers first."""
    manifest = sched.read_manifest(state)
    record = manifest.get(plan.key)
    if plan.format == "cron" and plan.scope == "user":
        current = _read_crontab()
        updated = sched.replace_block(current, "")
        if updated == current:
            say("nothing to remove: no testviper block in your crontab")
        elif dry_run:
            say("would remove the testviper block from your crontab")
        else:
            _write_crontab(updated)
            say("removed the testviper block from your crontab")
    elif record is None:
        say(f"nothing to remove: no {plan.format} {plan.scope} install recorded")
        return
    else:
        timers = record.get("timers", [])
        if plan.format == "systemd" and timers:
            _systemctl(
                [
                    plan.systemctl("disable", "--now", *timers),
                    plan.systemctl("clean", "--what=state", *timers),
                ],
                skip,
                dry_run,
                say,
            )
        for path, digest in record.get("files", {}).items():
            if dry_run:
                say(f"would remove {path}")
            else:
                _remove(path, digest, say)
        if plan.format == "systemd":
            _systemctl([plan.systemctl("daemon-reload")], skip, dry_run, say)
    if not dry_run and record is not None:
        del manifest[plan.key]
        sched.write_manifest(state, manifest)
