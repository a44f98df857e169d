"""ops/schedules.yaml: validation, cron -> OnCalendar, both renderings, install round trips."""

import importlib
import json
import os
import shutil
import subprocess
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import REPO, Cli, clean_env

from testviper.errors import UserError
from testviper.ops import schedules as sched
from testviper.tasks import ns

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze (Debian's systemd) missing"
)
BASES = [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 27, 23, 59, tzinfo=UTC)]

# cron expression -> the OnCalendar= it translates to
TABLE = {
    "*/15 * * * *": "*-*-* *:00/15:00",
    "0 * * * *": "*-*-* *:00:00",
    "0 */4 * * *": "*-*-* 00/4:00:00",
    "30 2 * * *": "*-*-* 02:30:00",
    "30 3 * * sun": "Sun *-*-* 03:30:00",
    "0 9-17 * * mon-fri": "Mon..Fri *-*-* 09..17:00:00",
    "0 7 * * mon": "Mon *-*-* 07:00:00",
    "0 6 1 * *": "*-*-01 06:00:00",
    "5,35 */2 * * *": "*-*-* 00/2:05,35:00",
    "*/7 * * * *": "*-*-* *:00,07,14,21,28,35,42,49,56:00",
    "0 0 */10 * *": "*-*-01,11,21,31 00:00:00",
    "10-50/20 * * * *": "*-*-* *:10/20:00",
    "23 0-20/2 * * *": "*-*-* 00,02,04,06,08,10,12,14,16,18,20:23:00",
    "0 0 28-31 * *": "*-*-28..31 00:00:00",
    "0 0 31 * *": "*-*-31 00:00:00",
    "0 12 29 2 *": "*-02-29 12:00:00",
    "59 23 31 12 *": "*-12-31 23:59:00",
    "0 0 1 */3 *": "*-01/3-01 00:00:00",
    "0 0 * jan,jul *": "*-01,07-* 00:00:00",
    "0 22 * * 1-5": "Mon..Fri *-*-* 22:00:00",
    "0 0 * * 0,7": "Sun *-*-* 00:00:00",
    "0 0 * * sat,sun": "Sat,Sun *-*-* 00:00:00",
    "0 4 * * 5-7": "Fri..Sun *-*-* 04:00:00",
    "0 8 * feb-apr tue,thu": "Tue,Thu *-02..04-* 08:00:00",
    "*/5 9-17 * * 1-5": "Mon..Fri *-*-* 09..17:00/5:00",
    "0 0,12 1,15 * *": "*-*-01,15 00,12:00:00",
    "0 0 1-7 * *": "*-*-01..07 00:00:00",
    "45 1 * * mon,wed-fri": "Mon,Wed..Fri *-*-* 01:45:00",
}


@pytest.mark.parametrize("expr", sorted(TABLE))
def test_translation(expr: str) -> None:
    """Each cron expression translates to the expected OnCalendar= text."""
    assert sched.to_on_calendar(expr) == TABLE[expr]


@needs_systemd
@pytest.mark.parametrize("expr", sorted(TABLE))
def test_croniter_and_systemd_fire_at_the_same_times(expr: str) -> None:
    """croniter's next 8 times equal `systemd-analyze calendar` for the translation."""
    on_calendar = sched.to_on_calendar(expr)
    for base in BASES:
        cron = [t.astimezone(UTC) for t in sched.cron_next(expr, 8, base)]
        assert cron == sched.systemd_next(on_calendar, 8, base), (expr, on_calendar, base)


@needs_systemd
@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
def test_same_times_in_a_time_zone(zone: str) -> None:
    """With a timezone, both sides agree in UTC (the zone goes into OnCalendar=)."""
    entry = _entries(f"x: {{task: sync, cron: '30 2 * * mon-fri', timezone: {zone}}}")[0]
    assert entry.on_calendar == f"Mon..Fri *-*-* 02:30:00 {zone}"
    assert sched.compare(entry, BASES[0]).ok


def _entries(body: str) -> list[sched.Entry]:
    import yaml

    data = {"schedules": yaml.safe_load(textwrap.dedent(body))}
    return sched.parse(data, ns, source="s.yaml")


BAD = {
    "@reboot": "schedules.x.cron: '@reboot' is not a calendar time",
    "@daily": "schedules.x.cron: '@daily': write the five fields",
    "0 3 * * * *": "schedules.x.cron: '0 3 * * * *' has 6 fields; exactly 5",
    "0 3 *": "has 3 fields",
    "0 3 1 * mon": "restricts both day-of-month and day-of-week",
    "0 3 */2 * 1-5": "restricts both day-of-month and day-of-week",
    "61 * * * *": "schedules.x.cron: '61 * * * *'",
    "0 0 31 2 *": "never matches a real date",
    "0 0 L * *": "'l' is not a day-of-month name",
    "59/15 * * * *": "a step after a single value",
    "0 0 * * 1#2": "is not cron syntax",
    "*/0 * * * *": "a step of 0",
    "0 0 * foo *": "'foo' is not a month name",
    "H * * * *": "'h' is not a minute name",
}


@pytest.mark.parametrize("expr", sorted(BAD))
def test_bad_cron_named_by_entry(expr: str) -> None:
    """Invalid and rejected expressions fail with a message naming the file and entry."""
    with pytest.raises(UserError) as exc:
        _entries(f"x: {{task: sync, cron: '{expr}'}}")
    assert str(exc.value).startswith("s.yaml: schedules.x.cron: "), str(exc.value)
    assert BAD[expr] in str(exc.value)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("x: {task: nosuch, cron: '0 * * * *'}", "schedules.x.task: no task named 'nosuch'"),
        ("x: {task: synk, cron: '0 * * * *'}", "did you mean 'sync'?"),
        ("x: {task: schedule.install, cron: '0 * * * *'}", "cannot run the schedule tasks"),
        (
            "x: {task: backup, cron: '0 * * * *', args: {keep-dayly: 3}}",
            "schedules.x.args.keep-dayly: the task 'backup' has no such option; "
            "did you mean 'keep-daily'?",
        ),
        ("x: {task: gate, cron: '0 * * * *', args: {quiet: 'yes'}}", "args.quiet: expected true"),
        ("x: {task: backup, cron: '0 * * * *', args: {keep-daily: x}}", "a whole number"),
        ("x: {task: sync, cron: '0 * * * *', tmeout: 5}", "schedules.x.tmeout: unknown key"),
        ("x: {task: sync}", "schedules.x.cron: missing"),
        ("x: {task: sync, cron: '0 * * * *', timezone: Mars/Base}", "unknown time zone"),
        ("x: {task: sync, cron: '0 * * * *', timeout: soon}", "schedules.x.timeout: expected"),
        ("x: {task: sync, cron: '0 * * * *', nice: 40}", "schedules.x.nice: expected"),
        ("x: {task: sync, cron: '0 * * * *', ionice: fast}", "schedules.x.ionice: expected"),
        ("x: {task: sync, cron: '0 * * * *', enabled: 1}", "schedules.x.enabled"),
        ("a.b: {task: sync, cron: '0 * * * *'}", "schedules.a.b: an entry name may contain"),
    ],
)
def test_bad_entries_named(body: str, fragment: str) -> None:
    """Unknown tasks, options and keys, and bad values name the entry and the key."""
    with pytest.raises(UserError) as exc:
        _entries(body)
    assert fragment in str(exc.value)


def test_arguments_become_options() -> None:
    """Option names in either spelling; booleans become flags; order is kept."""
    [entry] = _entries(
        "b: {task: backup, cron: '30 2 * * *', args: {keep_daily: 7, keep-weekly: 4}, "
        "timeout: 2h, random_delay: 10min, nice: 10, ionice: 'best-effort:7'}"
    )
    assert entry.argv == ["backup", "--keep-daily", "7", "--keep-weekly", "4"]
    assert (entry.timeout, entry.random_delay, entry.ionice) == (7200, 600, ("best-effort", 7))
    [gate] = _entries("g: {task: gate, cron: '0 */4 * * *', args: {quiet: true}}")
    assert gate.argv == ["gate", "--quiet"]


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    """An executable standing in for `testviper`: records its arguments, then sleeps $STUB_SLEEP."""
    path = tmp_path / "bin" / "testviper"
    path.parent.mkdir()
    path.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do printf "%s\\n" "$a"; done > "$STUB_OUT.tmp"\n'
        'mv "$STUB_OUT.tmp" "$STUB_OUT"\n'
        'sleep "${STUB_SLEEP:-0}"\n'
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def target(tmp_path: Path, stub: Path) -> sched.Target:
    root = tmp_path / "root dir"
    root.mkdir()
    return sched.Target(root=root, state=root / ".testviper", executable=stub, user="nobody2")


PERCENT = "out/100%-%F $HOME 'q' \"d\" x.json"
SAMPLE = f"""
sync: {{task: sync, cron: '*/15 * * * *', timeout: 10min}}
gate:
  task: gate
  args: {{quiet: true, json: {json.dumps(PERCENT)}}}
  cron: '0 */4 * * *'
  timezone: Europe/Berlin
  random_delay: 15min
  nice: 10
  ionice: idle
old: {{task: cleanup, cron: '30 3 * * sun', enabled: false}}
"""


@needs_systemd
@pytest.mark.parametrize("system", [False, True])
def test_rendered_units_verify(tmp_path: Path, target: sched.Target, system: bool) -> None:
    """Services and timers together pass `systemd-analyze verify` with nothing on stderr."""
    target.user = "root" if system else None
    units = sched.render_units(_entries(SAMPLE), target, system=system)
    assert sorted(units) == [
        "testviper-gate.service",
        "testviper-gate.timer",
        "testviper-sync.service",
        "testviper-sync.timer",
    ]
    out = tmp_path / "units"
    out.mkdir()
    done = sched.verify_units(units, out)
    assert (done.returncode, done.stderr) == (0, "")
    service, timer = units["testviper-gate.service"], units["testviper-gate.timer"]
    for line in (
        "Type=oneshot",
        "TimeoutStartSec=1h",
        "SuccessExitStatus=75",
        f"WorkingDirectory={target.root}",
        f"EnvironmentFile=-{target.root}/.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f'ReadWritePaths="{target.state}"',  # quoted: the path has a space
        "PrivateTmp=yes",
        "UMask=0077",
        "Nice=10",
        "IOSchedulingClass=idle",
    ):
        assert f"\n{line}\n" in service, line
    assert ("\nUser=root\n" in service) == system
    assert "\nOnCalendar=*-*-* 00/4:00:00 Europe/Berlin\n" in timer
    assert "\nPersistent=true\n" in timer and "\nRandomizedDelaySec=15min\n" in timer
    # % doubled, $ doubled, the argument with spaces and quotes quoted for systemd.
    assert (
        f"\nExecStart={target.executable} gate --quiet --json "
        '"out/100%%-%%F $$HOME \'q\' \\"d\\" x.json"\n' in service
    )


def _cron_shell_command(line: str) -> str:
    """What Debian's cron hands to /bin/sh for a crontab line: `\\%` -> `%`, `%` ends it."""
    command = line.split(" ", 5)[5]
    out, i = [], 0
    while i < len(command):
        if command.startswith("\\%", i):
            out.append("%")
            i += 2
            continue
        if command[i] == "%":
            break
        out.append(command[i])
        i += 1
    return "".join(out)


def _cron_lines(text: str) -> dict[str, str]:
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {line.split("cron-", 1)[1].split(".lock", 1)[0]: line for line in lines}


def _run_cron(line: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(["/bin/sh", "-c", _cron_shell_command(line)], env=env, text=True)


def test_percent_survives_cron(tmp_path: Path, target: sched.Target) -> None:
    """A `%` (and spaces, quotes, `$`) in an argument reaches the task unchanged via cron."""
    entries = [e for e in _entries(SAMPLE) if e.name != "gate"]
    [gate] = [e for e in _entries(SAMPLE) if e.name == "gate"]
    gate.timezone = None
    text = sched.render_cron([*entries, gate], target)
    assert text.startswith(sched.BEGIN + "\n") and text.endswith(sched.END + "\n")
    lines = _cron_lines(text)
    assert "%" not in lines["gate"].replace("\\%", "")
    assert "# disabled: 30 3 * * sun" in text
    out = tmp_path / "argv"
    proc = _run_cron(lines["gate"], {"STUB_OUT": str(out), "PATH": "/usr/bin:/bin"})
    assert proc.wait(30) == 0
    assert out.read_text().splitlines() == ["gate", "--quiet", "--json", PERCENT]
    log = target.state / "logs" / "gate.log"
    assert log.exists()


def test_cron_refuses_a_timezone(target: sched.Target) -> None:
    """Debian's cron has one time zone: an entry with one cannot be rendered for it."""
    with pytest.raises(UserError, match=r"schedules\.gate\.timezone: Debian's cron"):
        sched.render_cron(_entries(SAMPLE), target)


def test_overlapping_cron_runs_exit_75(tmp_path: Path, target: sched.Target) -> None:
    """While one run of an entry holds its flock, a second start exits 75 at once."""
    [entry] = _entries("sync: {task: sync, cron: '*/15 * * * *'}")
    line = _cron_lines(sched.render_cron([entry], target))["sync"]
    assert "flock -n -E 75 " in line and ">>" in line and line.startswith("*/15 * * * * cd ")
    out = tmp_path / "argv"
    env = {"STUB_OUT": str(out), "STUB_SLEEP": "5", "PATH": "/usr/bin:/bin"}
    first = _run_cron(line, env)
    try:
        deadline = time.monotonic() + 10
        while not out.exists():
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.02)
        started = time.monotonic()
        second = _run_cron(line, {**env, "STUB_OUT": str(tmp_path / "second")})
        assert second.wait(10) == 75
        assert time.monotonic() - started < 3, "the second run waited for the lock"
        assert not (tmp_path / "second").exists()
    finally:
        first.kill()
        first.wait()


def test_replace_block() -> None:
    """Only the marked block changes; a damaged block is refused."""
    block = f"{sched.BEGIN}\nnew\n{sched.END}\n"
    mine = f"MAILTO=a\n{sched.BEGIN}\nold\n{sched.END}\n5 * * * * x\n"
    assert sched.replace_block(mine, block) == f"MAILTO=a\n{block}5 * * * * x\n"
    assert sched.replace_block("5 * * * * x", block) == f"5 * * * * x\n{block}"
    assert sched.replace_block(mine, "") == "MAILTO=a\n5 * * * * x\n"
    with pytest.raises(UserError, match="damaged testviper block"):
        sched.replace_block(f"{sched.BEGIN}\nx\n", block)


# ---------------------------------------------------------------- the CLI on a project


PROJECT_SCHEDULE = """\
schedules:
  sync: {task: sync, cron: '*/15 * * * *'}
  gate: {task: gate, cron: '0 */4 * * *', args: {quiet: true}}
"""


@pytest.fixture
def home(tmp_path: Path, project: Path) -> dict[str, str]:
    """Env for the CLI: a temporary HOME, fake `crontab` and a `systemctl` that must not run."""
    (project / "ops").mkdir()
    (project / "ops" / "schedules.yaml").write_text(PROJECT_SCHEDULE)
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl-called\n')
    (fake / "crontab").write_text(
        "#!/bin/sh\n"
        'tab="$HOME/crontab"\n'
        'case "$1" in\n'
        '  -l) if [ -f "$tab" ]; then cat "$tab"; else echo "no crontab for t" >&2; exit 1; fi;;\n'
        '  -r) rm "$tab";;\n'
        '  -) cat > "$tab";;\n'
        "  *) exit 9;;\n"
        "esac\n"
    )
    for tool in fake.iterdir():
        tool.chmod(0o755)
    user_home = tmp_path / "home"
    user_home.mkdir()
    return clean_env(
        HOME=str(user_home),
        XDG_CONFIG_HOME=str(user_home / ".config"),
        PATH=f"{fake}:{os.environ['PATH']}",
        TESTVIPER_NO_SYSTEMCTL="1",
    )


def _tree(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")}


def test_systemd_install_uninstall_round_trip(
    project: Path, cli: Cli, home: dict[str, str], tmp_path: Path
) -> None:
    """Install writes the rendered units; uninstall leaves the directories exactly as before."""
    units = tmp_path / "units"
    units.mkdir()
    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    before, home_before = _tree(units), _tree(Path(home["HOME"]))
    args = ("--system", "--unit-dir", str(units), "--run-as", "nobody2")

    dry = cli("schedule.install", *args, "--dry-run", cwd=project, env=home)
    assert dry.returncode == 0, dry.stderr
    assert "would run: systemctl daemon-reload" in dry.stdout
    assert _tree(units) == before

    done = cli("schedule.install", *args, cwd=project, env=home)
    assert done.returncode == 0, done.stderr
    assert "skipped (systemctl disabled): systemctl enable --now" in done.stdout
    rendered = cli(
        "schedule.render",
        "--format",
        "systemd",
        "--system",
        "--run-as",
        "nobody2",
        "--output",
        str(tmp_path / "r"),
        cwd=project,
        env=home,
    )
    assert rendered.returncode == 0, rendered.stderr
    installed = {k: v for k, v in _tree(units).items() if k != "other.service"}
    assert installed == _tree(tmp_path / "r")
    assert sorted(installed) == [
        "testviper-gate.service",
        "testviper-gate.timer",
        "testviper-sync.service",
        "testviper-sync.timer",
    ]
    # An entry dropped from the schedule: its units go at the next install.
    (project / "ops" / "schedules.yaml").write_text(PROJECT_SCHEDULE.rsplit("  gate", 1)[0])
    again = cli("schedule.install", *args, cwd=project, env=home)
    assert again.returncode == 0, again.stderr
    assert sorted(_tree(units)) == [
        "other.service",
        "testviper-sync.service",
        "testviper-sync.timer",
    ]

    gone = cli("schedule.uninstall", "--system", "--unit-dir", str(units), cwd=project, env=home)
    assert gone.returncode == 0, gone.stderr
    assert _tree(units) == before
    assert _tree(Path(home["HOME"])) == home_before
    assert not (tmp_path / "systemctl-called").exists()


def test_user_units_default_dir(project: Path, cli: Cli, home: dict[str, str]) -> None:
    """--user writes to $XDG_CONFIG_HOME/systemd/user and refuses to overwrite foreign files."""
    unit_dir = Path(home["XDG_CONFIG_HOME"]) / "systemd" / "user"
    done = cli("schedule.install", "--user", "--no-systemctl", cwd=project, env=home)
    assert done.returncode == 0, done.stderr
    assert "User=" not in (unit_dir / "testviper-sync.service").read_text()
    assert cli("schedule.uninstall", "--user", cwd=project, env=home).returncode == 0
    assert _tree(unit_dir) == {}
    (unit_dir / "testviper-sync.timer").write_text("[Timer]\nOnCalendar=daily\n")
    refused = cli("schedule.install", "--user", cwd=project, env=home)
    assert refused.returncode == 2
    assert "was not installed by schedule.install" in refused.stderr
    assert sorted(_tree(unit_dir)) == ["testviper-sync.timer"]


def test_cron_install_uninstall_round_trip(project: Path, cli: Cli, home: dict[str, str]) -> None:
    """Only the marked block of the user's crontab changes; uninstall restores it exactly."""
    tab = Path(home["HOME"]) / "crontab"
    original = "MAILTO=me\n5 * * * * /bin/echo 100\\% mine\n"
    tab.write_text(original)
    for _ in range(2):  # installing twice keeps one block
        done = cli("schedule.install", "--user", "--format", "cron", cwd=project, env=home)
        assert done.returncode == 0, done.stderr
    text = tab.read_text()
    assert text.startswith(original) and text.count(sched.BEGIN) == 1
    assert f"cd {project} && " in text and f"{project}/.testviper/logs/sync.log" in text
    assert (
        cli("schedule.uninstall", "--user", "--format", "cron", cwd=project, env=home).returncode
        == 0
    )
    assert tab.read_text() == original

    tab.unlink()
    assert (
        cli("schedule.install", "--user", "--format", "cron", cwd=project, env=home).returncode == 0
    )
    assert (
        cli("schedule.uninstall", "--user", "--format", "cron", cwd=project, env=home).returncode
        == 0
    )
    assert not tab.exists()


def test_install_needs_one_scope(project: Path, cli: Cli, home: dict[str, str]) -> None:
    """Neither or both of --user/--system: exit 2 with one line."""
    done = cli("schedule.install", cwd=project, env=home)
    assert done.returncode == 2 and "exactly one of --user" in done.stderr


def test_missing_crontab_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Debian's cron, cron installs say what to install."""
    installer = importlib.import_module("testviper.ops.schedule_install")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match=r"crontab not found: install Debian's cron"):
        installer._crontab_binary()


# ---------------------------------------------------------------- the shipped schedule


def test_crontab_example_is_the_rendering(cli: Cli) -> None:
    """crontab.example at the root is what ops/schedules.yaml renders to."""
    done = cli("schedule.render", "--format", "cron", "--example", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (REPO / "crontab.example").read_text() == done.stdout, (
        "crontab.example is out of date; regenerate it with "
        "`inv schedule.render --format cron --example > crontab.example`"
    )


@needs_systemd
def test_shipped_schedule_checks(cli: Cli) -> None:
    """The shipped schedule validates, and `schedule.check` passes on it."""
    done = cli("schedule.check", cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemd-analyze verify: ok" in done.stdout
    shown = cli("schedule.show", cwd=REPO)
    assert shown.returncode == 0, shown.stderr
    assert "sync: testviper sync" in shown.stdout and "next " in shown.stdout


def test_cron_d_install_uninstall(
    project: Path, cli: Cli, home: dict[str, str], tmp_path: Path
) -> None:
    """--system --format cron writes /etc/cron.d/testviper (mode 0644, user field); uninstall
    removes it again."""
    cron_d = tmp_path / "cron.d"
    cron_d.mkdir()
    args = ("--system", "--format", "cron", "--cron-dir", str(cron_d), "--run-as", "nobody2")
    done = cli("schedule.install", *args, cwd=project, env=home)
    assert done.returncode == 0, done.stderr
    written = cron_d / "testviper"
    assert written.stat().st_mode & 0o777 == 0o644
    assert "\n*/15 * * * * nobody2 cd " in written.read_text()
    dry = cli("schedule.uninstall", *args[:-2], "--dry-run", cwd=project, env=home)
    assert dry.returncode == 0 and f"would remove {written}" in dry.stdout
    assert written.exists()
    gone = cli("schedule.uninstall", *args[:-2], cwd=project, env=home)
    assert gone.returncode == 0, gone.stderr
    assert _tree(cron_d) == {}


def test_bad_schedule_exits_2_naming_the_entry(
    project: Path, cli: Cli, home: dict[str, str]
) -> None:
    """The CLI turns a bad entry into one line on stderr and exit 2."""
    path = project / "ops" / "schedules.yaml"
    path.write_text("schedules:\n  daily: {task: sync, cron: '0 9 1 * mon'}\n")
    for task in ("schedule.render", "schedule.check", "schedule.show"):
        done = cli(task, cwd=project, env=home)
        assert done.returncode == 2, (task, done.stderr)
        [line] = done.stderr.splitlines()
        assert line.startswith(f"testviper: error: {path}: schedules.daily.cron: "), line
