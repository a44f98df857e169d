"""``inv health``: the fast checks a monitoring system runs every few minutes.

Each check is a plain function returning one or more ``Check``; ``run_health`` runs
them all, each guarded so that a bug in one check becomes an UNKNOWN line instead of a
traceback. Output follows the Nagios plugin conventions: one status line
``TESTVIPER <STATE> - <summary> | <perfdata>`` on stdout, then one line per check, and
the exit code of the worst state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

"Worst" ranks CRITICAL > WARNING > UNKNOWN > OK (the monitoring-plugins ``max_state_alt``
order): a check that could not run never hides a real failure. A check whose feature
is not available in this installation (``counted=False``) is listed but does not
change the overall state.

Nothing here writes: the history database is opened read-only and never migrated or
created, the outbox is only read.
"""

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OK, WARNING, CRITICAL, UNKNOWN = "OK", "WARNING", "CRITICAL", "UNKNOWN"
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
SERVICE = "TESTVIPER"
MB = 1024 * 1024


@dataclass
class Check:
    name: str
    state: str
    summary: str
    details: list[str] = field(default_factory=list)
    fix: str | None = None
    perfdata: list[str] = field(default_factory=list)
    counted: bool = True  # False: the feature is not available here; listed, not judged

    def line(self) -> str:
        text = f"{self.state} {self.name}: {self.summary}"
        return f"{text} (fix: {self.fix})" if self.fix and self.state != OK else text


@dataclass
class Report:
    checks: list[Check]
    kind: str = "health"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        judged = [c.state for c in self.checks if c.counted]
        return max(judged, key=SEVERITY.__getitem__, default=OK)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    @property
    def summary(self) -> str:
        state = self.state
        judged = [c for c in self.checks if c.counted]
        if state == OK:
            return f"{len(judged)} checks OK"
        worst = [c for c in judged if c.state == state]
        others = sum(1 for c in judged if c.state not in (OK, state))
        text = "; ".join(f"{c.name}: {c.summary}" for c in worst[:3])
        if len(worst) > 3:
            text += f"; {len(worst) - 3} more {state}"
        if others:
            text += f" (+{others} other problem{'s' if others > 1 else ''})"
        return text

    @property
    def perfdata(self) -> str:
        return " ".join(p for c in self.checks for p in c.perfdata)

    def status_line(self) -> str:
        line = f"{SERVICE} {self.state} - {one_line(self.summary)}"
        return f"{line} | {self.perfdata}" if self.perfdata else line

    def nagios(self) -> str:
        return "\n".join([self.status_line(), *(one_line(c.line()) for c in self.checks)])

    def to_dict(self) -> dict[str, Any]:
        status = {OK: "pass", WARNING: "warn", CRITICAL: "fail", UNKNOWN: "unknown"}
        return {
            "service": SERVICE,
            "kind": self.kind,
            "state": self.state,
            "status": status[self.state],
            "exit_code": self.exit_code,
            "summary": self.summary,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **self.extra,
            "checks": [asdict(c) for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def one_line(text: str) -> str:
    """Nagios reads the first line only; '|' would start the perfdata."""
    return " ".join(text.split()).replace("|", "/")


def perf(label: str, value: float, unit: str = "", warn: Any = "", crit: Any = "") -> str:
    shown = f"{value:.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    number = lambda v: f"{v:g}" if isinstance(v, int | float) else str(v)  # noqa: E731
    return f"'{label}'={shown}{unit};{number(warn)};{number(crit)};0;"


def hours(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def mb(n: float) -> str:
    return f"{n / MB:,.0f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def guarded(name: str, func: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an unexpected exception is its UNKNOWN result, never a traceback."""
    from testviper.errors import UserError

    try:
        result = func()
    except UserError as exc:
        return [Check(name, UNKNOWN, f"could not check: {exc}")]
    except Exception as exc:
        return [Check(name, UNKNOWN, f"could not check: {type(exc).__name__}: {exc}")]
    return result if isinstance(result, list) else [result]


# --------------------------------------------------------------------------- config


def load_settings(config: str | None) -> tuple[Check, Any]:
    """The config check and the settings to run the other checks with (None: unusable).

    A missing source or test directory is a CRITICAL config problem, but the settings
    still serve the other checks (loaded again without the path checks).
    """
    from testviper import config as config_module
    from testviper.errors import UserError

    try:
        settings = config_module.load(config)
    except UserError as exc:
        try:
            settings = config_module.load(config, check_paths=False)
        except UserError:
            settings = None
        fix = "`inv config.validate` shows the problem; fix the named key"
        return Check("config", CRITICAL, str(exc), fix=fix), settings
    return Check("config", OK, f"{settings.source} valid"), settings


# --------------------------------------------------------------------------- ReportPortal


def check_reportportal(settings: Any, names: list[str] | None = None) -> list[Check]:
    """Each enabled instance: reachable, key accepted, project exists, latency."""
    enabled = settings.enabled_instances
    if not enabled:
        return [Check("reportportal", OK, "no enabled instance configured")]
    try:
        from testviper.reporter import queries
    except ImportError:
        return [
            Check(
                "reportportal",
                UNKNOWN,
                "not available: the ReportPortal checks are not installed in this version",
                counted=False,
            )
        ]
    wanted = names or [i.name for i in enabled]
    by_name = {i.name: i for i in enabled}
    limit = settings.config.health.max_latency_ms
    return [
        instance_check(r, by_name.get(r.name), limit, settings)
        for r in queries.check_all(settings, wanted)
    ]


def instance_check(
    result: Any, instance: Any, max_latency_ms: float, settings: Any = None
) -> Check:
    name = f"rp:{result.name}"
    where = f"{result.endpoint}"
    project = instance.project if instance is not None else "?"
    key_env = instance.api_key_env if instance is not None else "the key variable"
    latency = result.latency_ms
    data = (
        [perf(f"rp_{result.name}_latency", latency / 1000, "s", max_latency_ms / 1000)]
        if (latency is not None)
        else []
    )
    details = [f"endpoint {where}", f"project {project}"]
    if result.version:
        details.append(f"server version {result.version}")
    if latency is not None:
        details.append(f"latency {latency:.0f} ms")
    error = f" ({result.error})" if result.error else ""
    if not result.reachable:
        # WARNING, not CRITICAL: nothing is lost, its runs wait in the outbox, and the
        # outbox check turns CRITICAL once they have waited outbox_critical_hours.
        return Check(
            name,
            WARNING,
            f"{where} {'not answering' if 'no answer' in error else 'unreachable'}{error}; "
            "its runs wait in the outbox for the next sync",
            details,
            fix=f"check that {where} is up and reachable from this host (`inv diagnose` traces it)",
            perfdata=data,
        )
    if instance is not None and settings is not None and not settings.secret(key_env):
        return Check(
            name,
            CRITICAL,
            f"API key variable {key_env} is not set",
            details,
            fix=f"export {key_env}=<key> or add `{key_env}=<key>` to {settings.root / '.env'} "
            "(mode 0600)",
            perfdata=data,
        )
    if result.key_accepted is False:
        return Check(
            name,
            CRITICAL,
            f"API key in {key_env} rejected{error}",
            details,
            fix=f"put a valid API key for {where} in {key_env} (environment or .env)",
            perfdata=data,
        )
    if result.project_exists is False:
        return Check(
            name,
            CRITICAL,
            f"project '{project}' not found on {where}",
            details,
            fix=f"create project '{project}' in ReportPortal or fix `project:` of instance "
            f"{result.name}",
            perfdata=data,
        )
    if not result.ok:
        return Check(
            name,
            CRITICAL,
            f"{where}: {result.error or 'check failed'}",
            details,
            fix="`inv diagnose` traces the connection step by step",
            perfdata=data,
        )
    if latency is not None and latency > max_latency_ms:
        return Check(
            name,
            WARNING,
            f"slow: {latency:.0f} ms (limit {max_latency_ms:g} ms)",
            details,
            fix="check the network path to ReportPortal or raise health.max_latency_ms",
            perfdata=data,
        )
    shown = f", {latency:.0f} ms" if latency is not None else ""
    return Check(name, OK, f"{where} project {project} ok{shown}", details, perfdata=data)


# --------------------------------------------------------------------------- outbox


def _age_seconds(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds())


def check_outbox(settings: Any, now: datetime | None = None) -> Check:
    """Undelivered outbox entries: how many, and how old the oldest is."""
    from testviper.reporter.outbox import pending_entries

    now = now or datetime.now(UTC)
    limits = settings.config.health
    warn_s, crit_s = limits.outbox_warn_hours * 3600, limits.outbox_critical_hours * 3600
    entries = [entry for _, entry in pending_entries(settings.state_dir)]
    ages = [a for e in entries if (a := _age_seconds(e.created_at, now)) is not None]
    oldest = max(ages, default=0.0)
    data = [
        perf("outbox", len(entries), "", "", ""),
        perf("outbox_oldest", round(oldest), "s", round(warn_s), round(crit_s)),
    ]
    if not entries:
        return Check("outbox", OK, "empty: every run delivered", perfdata=data)
    failed = [e for e in entries if e.status == "failed"]
    per_instance: dict[str, int] = {}
    for e in entries:
        per_instance[e.instance] = per_instance.get(e.instance, 0) + 1
    details = [f"{name}: {n} undelivered" for name, n in sorted(per_instance.items())]
    details += [f"{e.instance}/{e.run_id}: failed: {e.last_error}" for e in failed[:5]]
    text = f"{len(entries)} undelivered, oldest {hours(oldest)}"
    if failed:
        text += f", {len(failed)} rejected"
    fix = "run `inv sync` (and fix what `inv deliveries` shows for rejected entries)"
    if oldest > crit_s:
        return Check("outbox", CRITICAL, text, details, fix, data)
    if oldest > warn_s or failed:
        return Check("outbox", WARNING, text, details, fix, data)
    return Check("outbox", OK, text, details, perfdata=data)


# --------------------------------------------------------------------------- history


def sqlite_path(settings: Any) -> Path | None:
    """The SQLite file of the history, or None for a server database."""
    import sqlalchemy as sa

    url = sa.make_url(settings.history_url)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _sqlite_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def check_history(settings: Any) -> Check:
    """``PRAGMA quick_check`` on SQLite; a simple SELECT on other databases."""
    path = sqlite_path(settings)
    fix = (
        "restore the history from a backup: `inv backup.list`, then "
        "`inv restore ARCHIVE --only history --force`"
    )
    if path is None:
        return _check_server_history(settings)
    if not path.exists():
        return Check("history", OK, f"no history database yet ({path}); the first run creates it")
    try:
        con = _sqlite_ro(path)
        try:
            rows = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check("history", CRITICAL, f"{path}: {exc}", fix=fix)
    if rows != ["ok"]:
        return Check("history", CRITICAL, f"{path}: quick_check: {rows[0]}", rows[:10], fix)
    return Check("history", OK, f"{path}: quick_check ok ({mb(path.stat().st_size)})")


def _check_server_history(settings: Any) -> Check:
    import sqlalchemy as sa

    url = sa.make_url(settings.history_url)
    where = url.render_as_string(hide_password=True)
    try:
        engine = sa.create_engine(url, pool_pre_ping=False)
    except Exception as exc:  # the driver is not installed
        return Check(
            "history",
            CRITICAL,
            f"{where}: cannot use this database: {type(exc).__name__}: {exc}",
            fix=f"install the database driver for {url.get_backend_name()} "
            "(see SQLAlchemy's dialect list) or fix history.url",
        )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return Check(
            "history",
            CRITICAL,
            f"{where}: {type(exc).__name__}: {text}",
            fix="check that the database server is up and history.url is right",
        )
    finally:
        engine.dispose()
    return Check("history", OK, f"{where}: reachable")


def latest_run_start(settings: Any) -> datetime | None:
    """When the newest run in history started (UTC), None if there is none."""
    path = sqlite_path(settings)
    if path is not None:
        if not path.exists():
            return None
        con = _sqlite_ro(path)
        try:
            has = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'"
            ).fetchone()
            value = con.execute("SELECT max(started_at) FROM runs").fetchone()[0] if has else None
        finally:
            con.close()
        if value is None:
            return None
        moment = datetime.fromisoformat(str(value))
    else:
        import sqlalchemy as sa

        from testviper.history import schema

        engine = sa.create_engine(settings.history_url)
        try:
            with engine.connect() as conn:
                moment = conn.execute(sa.select(sa.func.max(schema.runs.c.started_at))).scalar()
        finally:
            engine.dispose()
        if moment is None:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_last_run(settings: Any, now: datetime | None = None) -> Check:
    """The newest run's age against the expected interval."""
    now = now or datetime.now(UTC)
    limits = settings.config.health
    warn_s, crit_s = limits.max_run_age_hours * 3600, limits.critical_run_age_hours * 3600
    try:
        started = latest_run_start(settings)
    except sqlite3.Error as exc:
        return Check("last_run", UNKNOWN, f"history unreadable ({exc}); see the history check")
    if started is None:
        return Check(
            "last_run",
            WARNING,
            "no run recorded yet",
            fix="run the suite once: `inv run`",
        )
    age = max(0.0, (now - started).total_seconds())
    data = [perf("last_run_age", round(age), "s", round(warn_s), round(crit_s))]
    text = f"newest run started {hours(age)} ago ({started:%Y-%m-%d %H:%M}Z)"
    fix = (
        "check the scheduled `inv run` (cron/timer logs); raise health.max_run_age_hours "
        "if runs are meant to be rarer"
    )
    if age > crit_s:
        return Check("last_run", CRITICAL, text, fix=fix, perfdata=data)
    if age > warn_s:
        return Check("last_run", WARNING, text, fix=fix, perfdata=data)
    return Check("last_run", OK, text, perfdata=data)


# --------------------------------------------------------------------------- disk


def existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def check_disk(settings: Any) -> Check:
    """Free space on the file system that holds the state directory."""
    limits = settings.config.health
    where = existing_ancestor(settings.state_dir)
    usage = shutil.disk_usage(where)
    free_mb = usage.free / MB
    data = [
        perf(
            "disk_free",
            round(free_mb),
            "MB",
            f"{limits.min_free_mb:g}:",
            f"{limits.critical_free_mb:g}:",
        )
    ]
    text = f"{mb(usage.free)} free of {mb(usage.total)} on the file system of {where}"
    fix = f"free space on the file system of {where} (`inv cleanup` removes old runs and reports)"
    if free_mb < limits.critical_free_mb:
        return Check("disk", CRITICAL, text, fix=fix, perfdata=data)
    if free_mb < limits.min_free_mb:
        return Check("disk", WARNING, text, fix=fix, perfdata=data)
    return Check("disk", OK, text, perfdata=data)


def check_state_size(settings: Any) -> Check:
    """Size of the state directory against health.max_state_mb / critical_state_mb."""
    limit = settings.config.health.max_state_mb
    critical = settings.config.health.critical_state_mb
    state = settings.state_dir
    if not state.is_dir():
        return Check("state_size", OK, f"no state directory yet ({state})")
    size = dir_size(state)
    data = [perf("state_size", round(size / MB, 3), "MB", limit, critical)]
    text = f"{state} holds {mb(size)} (limit {limit:g} MB)"
    fix = "`inv cleanup --dry-run` shows what retention would remove; or raise "
    fix += "health.max_state_mb"
    if size / MB > critical:
        return Check("state_size", CRITICAL, text, fix=fix, perfdata=data)
    if size / MB > limit:
        return Check("state_size", WARNING, text, fix=fix, perfdata=data)
    return Check("state_size", OK, text, perfdata=data)


# --------------------------------------------------------------------------- schedule


def check_schedule(settings: Any) -> Check:
    """Whether `inv schedule.install` put the schedule in place (cron or systemd).

    Missing is a WARNING where ``health.expect_schedule`` says this host runs the
    schedule; elsewhere (a developer's machine) it is listed and not judged.
    """
    from testviper.ops.schedules import read_manifest

    installed = sorted(read_manifest(settings.state_dir))
    if installed:
        return Check("schedule", OK, f"installed ({', '.join(installed)})")
    if settings.config.health.expect_schedule:
        return Check(
            "schedule",
            WARNING,
            "not installed",
            fix="inv schedule.install --user (or --system)",
        )
    return Check("schedule", UNKNOWN, "not installed on this host", counted=False)


# --------------------------------------------------------------------------- all together


def health_checks(
    settings: Any, reportportal: Callable[[Any], list[Check]] | None = None
) -> list[Check]:
    """Every health check except config, in display order.

    ``reportportal`` replaces the instance checks (diagnose adds a connection trace).
    """
    checks: list[Check] = []
    checks += guarded("reportportal", lambda: (reportportal or check_reportportal)(settings))
    checks += guarded("outbox", lambda: check_outbox(settings))
    checks += guarded("last_run", lambda: check_last_run(settings))
    checks += guarded("disk", lambda: check_disk(settings))
    checks += guarded("state_size", lambda: check_state_size(settings))
    checks += guarded("history", lambda: check_history(settings))
    checks += guarded("schedule", lambda: check_schedule(settings))
    return checks


def run_health(config: str | None) -> tuple[Report, Any]:
    """All health checks; the report and the settings (None if the config is unusable)."""
    started = time.monotonic()
    config_check, settings = load_settings(config)
    checks = [config_check]
    if settings is not None:
        checks += health_checks(settings)
    return Report(checks, extra={"duration_s": round(time.monotonic() - started, 3)}), settings


def secrets_of(settings: Any) -> list[str]:
    if settings is None:
        return []
    return [
        value
        for inst in settings.config.reportportal.instances
        if (value := settings.secret(inst.api_key_env))
    ]


def masked(text: str, secrets: Iterable[str]) -> str:
    """Defence in depth: no configured key value ever reaches the output."""
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def mask_report(report: Report, secrets: Iterable[str]) -> Report:
    """``report`` with every key value replaced in each check's texts (before rendering)."""
    values = list(secrets)
    for check in report.checks:
        check.summary = masked(check.summary, values)
        check.details = [masked(d, values) for d in check.details]
        check.fix = masked(check.fix, values) if check.fix else check.fix
    return report


def crash_report(exc: BaseException, kind: str = "health") -> Report:
    """The report for an unexpected failure of the whole command: UNKNOWN, exit 3."""
    return Report(
        [Check("internal", UNKNOWN, f"internal error: {type(exc).__name__}: {exc}")], kind
    )
