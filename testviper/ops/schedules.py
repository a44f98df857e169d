"""``ops/schedules.yaml``: load, validate, translate and render into cron or systemd timers.

One file describes when each maintenance task runs. It is rendered either into crontab
lines (a marked block of the user's crontab, or ``/etc/cron.d/testviper``) or into one
systemd service + timer pair per entry. The cron expression is the single source: the
timer's ``OnCalendar=`` is translated from it, and ``schedule.check`` proves both fire at
the same times.

Rules beyond croniter's own (strict) validation, so that cron and systemd agree:

- exactly five fields, no ``@reboot``/``@daily`` keywords and no non-Vixie syntax
  (``L``, ``W``, ``#``, ``?``, ``H``), no ``N/step`` without a range;
- day-of-month and day-of-week are never both restricted (cron ORs them, systemd ANDs).
"""

import difflib
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from testviper.errors import UserError

SCHEDULES = "ops/schedules.yaml"
BEGIN = "# BEGIN testviper"
END = "# END testviper"
UNIT_PREFIX = "testviper-"
CRON_D_NAME = "testviper"  # cron.d file names may not contain dots
LOCKED_EXIT = 75
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
KEYS = (
    "task",
    "args",
    "cron",
    "timezone",
    "random_delay",
    "timeout",
    "nice",
    "ionice",
    "enabled",
    "description",
)
DEFAULT_TIMEOUT = 3600
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
ITEM = re.compile(r"^(\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/([0-9]+))?$")
SPAN = re.compile(r"(\d+)\s*(d|h|min|m|s|sec)?\s*")
SPAN_UNITS = {"d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1, "sec": 1, None: 1}
IONICE_CLASSES = {"idle": 3, "best-effort": 2}
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Entry:
    """One validated schedule entry."""

    name: str
    task: str
    cron: str
    args: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)  # task name and rendered options
    timezone: str | None = None
    random_delay: int = 0  # seconds
    timeout: int = DEFAULT_TIMEOUT  # seconds
    nice: int | None = None
    ionice: tuple[str, int | None] | None = None  # (class, priority)
    enabled: bool = True
    description: str = ""

    @property
    def on_calendar(self) -> str:
        return to_on_calendar(self.cron, self.timezone)

    @property
    def unit(self) -> str:
        return f"{UNIT_PREFIX}{self.name}"

    def next_runs(self, count: int, base: datetime | None = None) -> list[datetime]:
        return cron_next(self.cron, count, base, self.timezone)


# ---------------------------------------------------------------- cron expressions


def check_cron(expr: Any) -> str:
    """The expression, normalized to single spaces; ValueError with the reason if unusable."""
    from croniter import croniter
    from croniter.croniter import CroniterError

    if not isinstance(expr, str):
        raise ValueError(f"expected a 5-field cron expression as a string, got {expr!r}")
    text = " ".join(expr.split())
    if text.startswith("@"):
        if text == "@reboot":
            raise ValueError(
                "'@reboot' is not a calendar time (systemd would need OnBootSec=); "
                "start the task from the boot scripts instead"
            )
        raise ValueError(f"'{text}': write the five fields instead of the keyword")
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"'{text}' has {len(fields)} fields; exactly 5 are needed "
            "(minute hour day-of-month month day-of-week)"
        )
    for name, value in zip(FIELD_NAMES, fields, strict=True):
        for item in value.lower().split(","):
            match = ITEM.match(item)
            if not match:
                raise ValueError(
                    f"{name} field '{value}': '{item}' is not cron syntax Debian's cron accepts "
                    "(numbers, names, a-b ranges, */n or a-b/n steps, comma lists)"
                )
            base, step = match.groups()
            if step is not None and base != "*" and "-" not in base:
                raise ValueError(
                    f"{name} field '{value}': '{item}' (a step after a single value) means "
                    "different things to different cron versions; write '*/n' or 'a-b/n'"
                )
            if step is not None and int(step) == 0:
                raise ValueError(f"{name} field '{value}': a step of 0 never advances")
            for part in base.split("-"):
                if part.isalpha():
                    names = MONTHS if name == "month" else WEEKDAYS if name == "day-of-week" else ()
                    if part not in names:
                        raise ValueError(
                            f"{name} field '{value}': '{part}' is not a {name} name"
                            + (f" ({', '.join(names)})" if names else "")
                        )
    if fields[2] != "*" and fields[4] != "*":
        raise ValueError(
            f"'{text}' restricts both day-of-month and day-of-week: cron runs when either "
            "matches, systemd only when both do; restrict one of them and use two entries "
            "if both are meant"
        )
    try:
        croniter(text)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ValueError(f"'{text}': {exc}") from None
    if not croniter.is_valid(text, strict=True):
        raise ValueError(f"'{text}' never matches a real date (e.g. 31 February)")
    return text


def expanded(expr: str) -> list[list[int] | None]:
    """Each field as the sorted values it matches, or None for every value."""
    from croniter import croniter

    out: list[list[int] | None] = []
    for values in croniter(expr).expanded:
        if values == ["*"]:
            out.append(None)
        else:
            out.append(sorted({int(v) for v in values}))
    return out


def _compact(values: list[int], lo: int, hi: int, repeat: bool = True) -> str:
    """Sorted numbers as a systemd calendar component: '*', 'a/step', ranges, lists.

    systemd 252 continues a repetition across the wrap of the next larger unit
    (``*:00/7`` fires at 00:07 after 23:56, not at 00:00), so 'a/step' is used only
    when the step divides the field's period, and never for days of the month.
    """
    if values == list(range(lo, hi + 1)):
        return "*"
    if repeat and len(values) >= 3 and (hi - lo + 1) % (values[1] - values[0]) == 0:
        step = values[1] - values[0]
        if (
            step > 1
            and all(b - a == step for a, b in itertools.pairwise(values))
            and values[-1] + step > hi
        ):
            return f"{values[0]:02d}/{step}"
    return ",".join(_runs(values, lambda v: f"{v:02d}"))


def _runs(values: list[int], label: Any) -> list[str]:
    """Consecutive runs of three or more as 'a..b', the rest one by one."""
    parts: list[str] = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        if prev - start >= 2:
            parts.append(f"{label(start)}..{label(prev)}")
        else:
            parts.extend(label(v) for v in range(start, prev + 1))
        if value is not None:
            start = prev = value
    return parts


def to_on_calendar(expr: str, timezone: str | None = None) -> str:
    """The systemd ``OnCalendar=`` value that fires exactly when the cron expression does."""
    minute, hour, dom, month, dow = expanded(check_cron(expr))

    def part(values: list[int] | None, index: int) -> str:
        lo, hi = FIELD_RANGES[index]
        return "*" if values is None else _compact(values, lo, hi, repeat=index != 2)

    out = f"*-{part(month, 3)}-{part(dom, 2)} {part(hour, 1)}:{part(minute, 0)}:00"
    if dow is not None and len(dow) < 7:
        # systemd's week runs Mon..Sun: Sunday (0 in cron) sorts last.
        order = sorted((d - 1) % 7 for d in dow)
        out = ",".join(_runs(order, lambda i: SYSTEMD_DAYS[(i + 1) % 7])) + " " + out
    return f"{out} {timezone}" if timezone else out


def cron_next(
    expr: str, count: int, base: datetime | None = None, timezone: str | None = None
) -> list[datetime]:
    """The next ``count`` fire times after ``base`` (default: now), as aware datetimes."""
    from croniter import croniter

    zone = ZoneInfo(timezone) if timezone else UTC
    start = (base or datetime.now(UTC)).astimezone(zone)
    it = croniter(expr, start)
    return [it.get_next(datetime) for _ in range(count)]


CALENDAR_LINE = re.compile(
    r"(?:Next elapse|Iter\. #\d+):\s+\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"
)


def systemd_next(on_calendar: str, count: int, base: datetime) -> list[datetime]:
    """The next ``count`` elapses from ``systemd-analyze calendar`` (UserError if missing)."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        raise UserError(
            "systemd-analyze not found: install Debian's systemd package "
            "(apt-get install -y systemd) to check the timers"
        )
    stamp = base.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    done = subprocess.run(
        [binary, "calendar", f"--iterations={count}", f"--base-time={stamp}", on_calendar],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
        check=False,
    )
    if done.returncode != 0:
        raise UserError(f"systemd-analyze calendar '{on_calendar}': {done.stderr.strip()}")
    return [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        for m in CALENDAR_LINE.findall(done.stdout)
    ]


# ---------------------------------------------------------------- loading


def parse_span(value: Any) -> int:
    """A systemd-style time span ('15min', '2h', '1h 30min', 90) in seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '15min' or '2h', got {value!r}")
    if isinstance(value, int) and value >= 0:
        return value
    text = str(value).strip()
    if not text or not SPAN.fullmatch(text) or isinstance(value, float):
        raise ValueError(
            f"expected a duration like 90, '90s', '15min', '2h' or '1d', got {value!r}"
        )
    return sum(int(n) * SPAN_UNITS[unit] for n, unit in SPAN.findall(text))


def span_text(seconds: int) -> str:
    """Seconds in systemd's notation, as short as exact: 3600 -> '1h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _task_arguments(ns: Any, task_name: str) -> dict[str, Any]:
    """The task's arguments by every spelling a schedule may use (dashed and underscored)."""
    task = ns[task_name]
    out = {}
    for arg in task.get_arguments():
        out[arg.names[0]] = arg
        out[arg.name] = arg
    return out


def _known_tasks(ns: Any) -> list[str]:
    names = []
    for primary, aliases in ns.task_names.items():
        names.append(primary)
        names.extend(aliases)
    return names


def _option_words(arg: Any, value: Any, where: str) -> list[str]:
    flag = f"--{arg.names[0]}"
    kind = arg.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        if value == bool(arg.default):
            return []
        return [flag] if value else [f"--no-{arg.names[0]}"]
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected a whole number, got {value!r}")
        return [flag, str(value)]
    if kind is list:
        items = value if isinstance(value, list) else [value]
        words = []
        for item in items:
            if isinstance(item, bool | dict | list) or item is None:
                raise UserError(f"{where}: expected text values, got {item!r}")
            words += [flag, str(item)]
        return words
    if isinstance(value, bool | dict | list) or value is None:
        raise UserError(f"{where}: expected a text value, got {value!r}")
    return [flag, str(value)]


def _entry(name: str, raw: Any, ns: Any, where: str) -> Entry:
    if not NAME.match(name):
        raise UserError(
            f"{where}: an entry name may contain only letters, digits, '_' and '-' "
            "(it becomes a unit and a lock file name)"
        )
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping with task and cron, got {raw!r}")
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (keys: {', '.join(KEYS)})"
            raise UserError(f"{where}.{key}: unknown key{hint}")
    for key in ("task", "cron"):
        if key not in raw:
            raise UserError(f"{where}.{key}: missing (every entry needs task and cron)")
    try:
        cron = check_cron(raw["cron"])
    except ValueError as exc:
        raise UserError(f"{where}.cron: {exc}") from None
    task_name = raw["task"]
    known = _known_tasks(ns)
    if not isinstance(task_name, str) or task_name not in known:
        close = difflib.get_close_matches(str(task_name), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(
            f"{where}.task: no task named {task_name!r}{hint} (`testviper --list` shows them)"
        )
    if task_name.startswith("schedule.") or task_name == "schedule":
        raise UserError(f"{where}.task: a schedule cannot run the schedule tasks themselves")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise UserError(f"{where}.args: expected a mapping of option: value, got {args!r}")
    accepted = _task_arguments(ns, task_name)
    argv = [task_name]
    for key, value in args.items():
        arg = accepted.get(str(key))
        if arg is None:
            options = sorted({a.names[0] for a in accepted.values()})
            close = difflib.get_close_matches(str(key), options, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UserError(
                f"{where}.args.{key}: the task '{task_name}' has no such option; "
                f"{hint}(options: {', '.join(options) or 'none'})"
            )
        argv += _option_words(arg, value, f"{where}.args.{key}")
    entry = Entry(name=name, task=task_name, cron=cron, args=dict(args), argv=argv)
    zone = raw.get("timezone")
    if zone is not None:
        try:
            if not isinstance(zone, str) or not zone or zone.startswith(("/", ".")):
                raise ValueError
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UserError(
                f"{where}.timezone: unknown time zone {zone!r} (an IANA name like Europe/Berlin)"
            ) from None
        entry.timezone = zone
    for key, attr in (("random_delay", "random_delay"), ("timeout", "timeout")):
        if raw.get(key) is not None:
            try:
                setattr(entry, attr, parse_span(raw[key]))
            except ValueError as exc:
                raise UserError(f"{where}.{key}: {exc}") from None
    if entry.timeout <= 0:
        raise UserError(f"{where}.timeout: must be more than 0")
    nice = raw.get("nice")
    if nice is not None:
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise UserError(f"{where}.nice: expected a whole number from 0 to 19, got {nice!r}")
        entry.nice = nice
    ionice = raw.get("ionice")
    if ionice is not None:
        text = str(ionice)
        cls, _, prio = text.partition(":")
        if (
            cls not in IONICE_CLASSES
            or (cls == "idle" and prio)
            or (prio and not (prio.isdigit() and 0 <= int(prio) <= 7))
        ):
            raise UserError(
                f"{where}.ionice: expected 'idle', 'best-effort' or 'best-effort:N' "
                f"(N 0..7), got {ionice!r}"
            )
        entry.ionice = (cls, int(prio) if prio else None)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UserError(f"{where}.enabled: expected true or false, got {enabled!r}")
    entry.enabled = enabled
    description = raw.get("description", "")
    if not isinstance(description, str) or "\n" in description:
        raise UserError(f"{where}.description: expected one line of text")
    entry.description = description
    return entry


def parse(data: Any, ns: Any, source: str = SCHEDULES) -> list[Entry]:
    """Validate the parsed YAML; UserError naming ``schedules.<entry>.<key>`` on a problem.

    ``ns`` is the task tree (an Invoke collection) that entries must name tasks and options
    of; the caller passes it, so the library never imports the task layer.
    """
    if not isinstance(data, dict) or set(data) - {"schedules"}:
        extra = sorted(set(data) - {"schedules"}) if isinstance(data, dict) else []
        what = f"unknown top-level key '{extra[0]}'; " if extra else ""
        raise UserError(f"{source}: {what}the file holds one mapping `schedules: {{name: ...}}`")
    entries = data.get("schedules") or {}
    if not isinstance(entries, dict):
        raise UserError(f"{source}: schedules: expected a mapping of name: entry")
    try:
        return [_entry(str(n), raw, ns, f"schedules.{n}") for n, raw in entries.items()]
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def load(path: Path, ns: Any) -> list[Entry]:
    """Read and validate a schedules file."""
    from testviper.config_file import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"{path}: no such schedules file (the repository ships ops/schedules.yaml)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    return parse(load_yaml(text, path) or {}, ns, str(path))


# ---------------------------------------------------------------- rendering


@dataclass
class Target:
    """Where and as whom the jobs run; the values every rendering needs."""

    root: Path  # working directory (the project root)
    state: Path  # the state directory: locks, logs, the only writable path of the units
    executable: Path  # the venv's `testviper`
    user: str | None = None  # User= of system units, the user field of /etc/cron.d
    config: Path | None = None  # exported as TESTVIPER_CONFIG when not <root>/testviper.yaml

    @property
    def path_env(self) -> str:
        return f"{self.executable.parent}:{DEFAULT_PATH}"


EXAMPLE = Target(
    root=Path("/srv/testviper"),
    state=Path("/srv/testviper/.testviper"),
    executable=Path("/srv/testviper/.venv/bin/testviper"),
)


def cron_percent(text: str) -> str:
    """Escape ``%``, which cron turns into a newline (the rest becomes stdin)."""
    return text.replace("%", "\\%")


def unit_percent(text: str) -> str:
    """Escape ``%``, which systemd reads as a unit specifier."""
    return text.replace("%", "%%")


def systemd_word(word: str) -> str:
    """One ExecStart= argument: quoted when needed, ``$`` doubled (``%`` is the template's)."""
    word = word.replace("$", "$$")
    if word and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env() -> Any:
    from importlib.resources import files

    import jinja2

    class Loader(jinja2.BaseLoader):
        def get_source(self, environment: Any, template: str) -> tuple[str, None, Any]:
            text = files("testviper.templates").joinpath(template).read_text(encoding="utf-8")
            return text, None, lambda: True

    env = jinja2.Environment(
        loader=Loader(),
        autoescape=False,
        keep_trailing_newline=True,  # crontab needs its final newline
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cron_percent"] = cron_percent
    env.filters["unit_percent"] = unit_percent
    return env


def _wrappers(entry: Entry) -> list[str]:
    words = ["timeout", "-k", "60", str(entry.timeout)]
    if entry.nice is not None:
        words += ["nice", "-n", str(entry.nice)]
    if entry.ionice is not None:
        cls, prio = entry.ionice
        words += ["ionice", "-c", str(IONICE_CLASSES[cls])]
        if prio is not None:
            words += ["-n", str(prio)]
    return words


def lock_file(target: Target, entry: Entry) -> Path:
    return target.state / "locks" / f"cron-{entry.name}.lock"


def log_file(target: Target, entry: Entry) -> Path:
    return target.state / "logs" / f"{entry.name}.log"


def cron_command(entry: Entry, target: Target) -> str:
    """The shell command of one crontab line, before ``%`` escaping."""
    q = shlex.quote
    env = f"PATH={q(target.path_env)}"
    if target.config is not None:
        env += f" TESTVIPER_CONFIG={q(str(target.config))}"
    job = [
        "flock",
        "-n",
        "-E",
        str(LOCKED_EXIT),
        str(lock_file(target, entry)),
        *_wrappers(entry),
        str(target.executable),
        *entry.argv,
    ]
    dirs = f"{q(str(target.state / 'locks'))} {q(str(target.state / 'logs'))}"
    return (
        f"cd {q(str(target.root))} && umask 077 && mkdir -p {dirs} && "
        f"{env} {shlex.join(job)} >>{q(str(log_file(target, entry)))} 2>&1"
    )


def render_cron(entries: list[Entry], target: Target, system: bool = False) -> str:
    """A marked crontab block (``system``: the ``/etc/cron.d/testviper`` file, with user field)."""
    for entry in entries:
        if entry.timezone:
            raise UserError(
                f"schedules.{entry.name}.timezone: Debian's cron runs every job in the system "
                "time zone (it has no CRON_TZ); use --format systemd, or drop the timezone"
            )
    if system and not target.user:
        raise UserError("a system crontab (/etc/cron.d) needs the user to run the jobs as")
    jobs = [
        {
            "name": e.name,
            "cron": e.cron,
            "enabled": e.enabled,
            "summary": e.description or "testviper " + " ".join(e.argv),
            "random_delay": span_text(e.random_delay) if e.random_delay else "",
            "command": cron_command(e, target),
        }
        for e in entries
    ]
    return (
        _env()
        .get_template("crontab.j2")
        .render(jobs=jobs, system=system, user=target.user, begin=BEGIN, end=END)
    )


def render_units(entries: list[Entry], target: Target, system: bool = False) -> dict[str, str]:
    """File name -> text of the service and timer of every enabled entry."""
    if system and not target.user:
        raise UserError("system units need the user to run the jobs as (User=)")
    env = _env()
    env_vars = [f"PATH={target.path_env}"]
    if target.config is not None:
        env_vars.append(f"TESTVIPER_CONFIG={target.config}")
    out: dict[str, str] = {}
    for e in entries:
        if not e.enabled:
            continue
        common = {
            "name": e.name,
            "cron": e.cron,
            "summary": e.description or "testviper " + " ".join(e.argv),
        }
        out[f"{e.unit}.service"] = env.get_template("service.j2").render(
            **common,
            user=target.user if system else None,
            root=str(target.root),
            state=systemd_word(str(target.state)).replace("$$", "$"),
            env_file=str(target.root / ".env"),
            environment=[systemd_word(v) for v in env_vars],
            exec_start=" ".join(systemd_word(w) for w in [str(target.executable), *e.argv]),
            timeout=span_text(e.timeout),
            exit_locked=LOCKED_EXIT,
            nice=e.nice,
            io_class=e.ionice[0] if e.ionice else None,
            io_priority=e.ionice[1] if e.ionice else None,
        )
        out[f"{e.unit}.timer"] = env.get_template("timer.j2").render(
            **common,
            on_calendar=e.on_calendar,
            random_delay=span_text(e.random_delay) if e.random_delay else "",
        )
    return out


# ---------------------------------------------------------------- checks


@dataclass
class Comparison:
    entry: Entry
    cron: list[datetime]
    systemd: list[datetime]

    @property
    def ok(self) -> bool:
        return self.cron == self.systemd


def compare(entry: Entry, base: datetime, count: int = 8) -> Comparison:
    """croniter's next ``count`` fire times next to systemd's for the translated OnCalendar."""
    return Comparison(
        entry,
        [t.astimezone(UTC) for t in entry.next_runs(count, base)],
        systemd_next(entry.on_calendar, count, base),
    )


def verify_units(units: dict[str, str], directory: Path) -> subprocess.CompletedProcess[str]:
    """Write the units to ``directory`` and run ``systemd-analyze verify`` on all of them."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        raise UserError(
            "systemd-analyze not found: install Debian's systemd package "
            "(apt-get install -y systemd) to verify the units"
        )
    paths = []
    for name, text in units.items():
        (directory / name).write_text(text, encoding="utf-8")
        paths.append(str(directory / name))
    return subprocess.run(
        [binary, "verify", "--man=no", *paths],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )


# ---------------------------------------------------------------- install / uninstall


def check_renderings(entries: list[Entry], target: Target) -> Iterator[tuple[str, bool]]:
    """Prove the renderings agree: yields (line, ok) for each entry, the units, the crontab.

    Each entry's next 8 cron fire times must equal ``systemd-analyze calendar``'s for its
    OnCalendar; the units must pass ``systemd-analyze verify`` with nothing on stderr; the
    crontab must pass ``crontab -n`` where Debian's cron is installed.
    """
    base = now_utc()
    for entry in entries:
        result = compare(entry, base)
        if result.ok:
            yield f"{entry.name}: ok  {entry.cron!r} = OnCalendar={entry.on_calendar!r}", True
            continue
        lines = [f"{entry.name}: DIFFERENT  {entry.cron!r} vs OnCalendar={entry.on_calendar!r}"]
        for a, b in zip(result.cron, result.systemd, strict=False):
            mark = "  " if a == b else "!="
            lines.append(f"    cron {a:%Y-%m-%d %H:%M %Z}  {mark}  systemd {b:%Y-%m-%d %H:%M %Z}")
        yield "\n".join(lines), False
    units = render_units(entries, target, system=True)
    with tempfile.TemporaryDirectory(prefix="testviper-units-") as tmp:
        done = verify_units(units, Path(tmp))
    if done.returncode == 0 and not done.stderr.strip():
        yield f"systemd-analyze verify: ok ({len(units)} units)", True
    else:
        yield (
            f"systemd-analyze verify: FAILED (exit {done.returncode})\n{done.stderr.rstrip()}",
            False,
        )
    try:
        text = render_cron(entries, target)
    except UserError as exc:
        yield f"crontab: not checked ({exc})", True
        return
    crontab = shutil.which("crontab")
    if crontab is None:
        yield "crontab -n: skipped (Debian's cron is not installed)", True
        return
    with tempfile.NamedTemporaryFile("w", suffix=".crontab") as handle:
        handle.write(text)
        handle.flush()
        done = subprocess.run(
            [crontab, "-n", handle.name], capture_output=True, text=True, check=False
        )
    if done.returncode == 0:
        yield "crontab -n: ok", True
    else:
        yield f"crontab -n: FAILED {(done.stderr or done.stdout).strip()}", False


def replace_block(crontab: str, block: str) -> str:
    """``crontab`` with our marked block replaced by ``block`` ('' removes it)."""
    lines = crontab.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if (
        len(begins) > 1
        or len(ends) > 1
        or len(begins) != len(ends)
        or (begins and ends[0] < begins[0])
    ):
        raise UserError(
            f"the crontab has a damaged testviper block ({len(begins)} '{BEGIN}' and "
            f"{len(ends)} '{END}' lines); fix it with `crontab -e`"
        )
    if begins:
        before, after = lines[: begins[0]], lines[ends[0] + 1 :]
    else:
        before, after = lines, []
        if before and not before[-1].endswith("\n"):
            before[-1] += "\n"
    return "".join(before) + block + "".join(after)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_path(state: Path) -> Path:
    return state / "schedule" / "installed.json"


def read_manifest(state: Path) -> dict[str, Any]:
    path = manifest_path(state)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable install manifest ({exc})") from None
    return data if isinstance(data, dict) else {}


def write_manifest(state: Path, data: dict[str, Any]) -> None:
    from testviper.fsutil import atomic_write

    path = manifest_path(state)
    if not data:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def now_utc() -> datetime:
    """The current minute: the base time of ``schedule.check`` and ``schedule.show``."""
    return datetime.now(UTC).replace(second=0, microsecond=0)
