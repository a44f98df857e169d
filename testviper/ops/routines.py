"""The scheduled routines ``daily``, ``weekly`` and ``monthly``: named steps, one line each.

A routine is a list of step names (``routines.<name>`` in the config, default
``config.ROUTINE_STEPS``), each mapped here to a plain function that returns a state and
a one-line detail. The routine holds its file lock (a second run exits 75), runs every
step in a guard, prints each step's line as soon as it is done (so a cron log shows how
far a killed run got), then a summary line, and sends the summary to the alert channels.

States are the health ones: OK, WARNING, CRITICAL, UNKNOWN, plus SKIPPED for a step that
has nothing to work with here ("not configured", "not available", "no run yet"); a
skipped step never pretends to have checked anything. The routine's state is the worst
step's (CRITICAL > WARNING > UNKNOWN > OK, as for health; SKIPPED does not count) and its
exit code the Nagios one: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

A failing step never stops the others: a ``UserError`` (something the admin must fix)
makes the step CRITICAL with its message, any other exception UNKNOWN with its one-line
cause, and the traceback is appended to ``<state>/logs/routines.log``.

A failed gate is a WARNING here: the routine reports the verdict; failing the build is the
job of ``inv gate`` in CI.
"""

import functools
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testviper.config import ROUTINE_STEPS, Settings
from testviper.errors import LockHeld, UserError
from testviper.ops.health import CRITICAL, EXIT_CODES, OK, SEVERITY, UNKNOWN, WARNING
from testviper.reporter.masking import Masker

SKIPPED = "SKIPPED"
NAME_WIDTH = 13  # step names are padded with dots to this, so the states line up
DETAIL_CHARS = 400
LIST_ITEMS = 3  # names shown in a step line before "and N more"
DURATION_GROWTH_WARN = 20.0  # percent of the median run duration per 30 days
LOG = "routines.log"
MEANING = {
    OK: "nothing needs attention",
    WARNING: "needs attention",
    CRITICAL: "action required",
    UNKNOWN: "a step could not check",
}
PERIOD = {"daily": "last 24 hours", "weekly": "last 7 days", "monthly": "last 30 days"}
# Digest file names carry the period they cover; a second digest in one period gets the time.
PERIOD_NAME = {"daily": "%Y-%m-%d", "weekly": "%G-W%V", "monthly": "%Y-%m"}
ALERT_SEVERITY = {OK: "info", WARNING: "warning", UNKNOWN: "warning", CRITICAL: "critical"}

Outcome = tuple[str, str]  # (state, one-line detail)


@dataclass
class Step:
    name: str
    state: str
    detail: str
    duration: float = 0.0
    counted: bool = True  # False: shown, but not part of the routine's state

    def line(self, routine: str) -> str:
        dots = "." * max(2, NAME_WIDTH - len(self.name))
        return f"{routine}: {self.name} {dots} {self.state:<8} {self.duration:6.2f}s  {self.detail}"


@dataclass
class Result:
    routine: str
    steps: list[Step] = field(default_factory=list)
    duration: float = 0.0

    @property
    def state(self) -> str:
        judged = [s.state for s in self.steps if s.counted and s.state != SKIPPED]
        return max(judged, key=SEVERITY.__getitem__, default=OK)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.state]

    def headline(self, timed: bool = True) -> str:
        """``daily: WARNING (exit 1, needs attention) in 3.2s: 1 WARNING, 4 OK``."""
        state = self.state
        counts: dict[str, int] = {}
        for s in self.steps:
            if s.counted:
                counts[s.state] = counts.get(s.state, 0) + 1
        order = (CRITICAL, WARNING, UNKNOWN, OK, SKIPPED)
        tally = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
        took = f" in {self.duration:.1f}s" if timed else ""
        return f"{self.routine}: {state} (exit {self.exit_code}, {MEANING[state]}){took}: {tally}"

    def problems(self) -> list[Step]:
        """The steps not OK (nor skipped), worst first."""
        found = [s for s in self.steps if s.state not in (OK, SKIPPED)]
        return sorted(found, key=lambda s: -SEVERITY[s.state])

    def summary(self) -> str:
        """The headline and what each problem step said: the last line of the output."""
        problems = self.problems()
        text = "; ".join(f"{s.name} {s.state}: {s.detail}" for s in problems)
        return f"{self.headline()} - {text}" if problems else self.headline()

    def alert_text(self) -> str:
        """The headline, one line per problem, the other steps by name.

        Nothing that changes from run to run without news (durations, file names), so
        the same problems again within ``alerts.dedup_minutes`` are deduplicated.
        """
        lines = [self.headline(timed=False)]
        lines += [f"- {s.name} {s.state}: {s.detail}" for s in self.problems()]
        for state in (OK, SKIPPED):
            names = [s.name for s in self.steps if s.state == state]
            if names:
                lines.append(f"{state}: {', '.join(names)}")
        return "\n".join(lines)


class Context:
    """What the steps share: settings, where reports go, and the period's digest (once)."""

    def __init__(self, settings: Settings, routine: str) -> None:
        self.settings = settings
        self.routine = routine
        self.reports_dir = settings.state_dir / "reports"
        self._digest: Any = None

    def digest(self) -> Any:
        """The routine's ``Digest`` (analytics, markdown, html), computed on first use."""
        if self._digest is None:
            from testviper.reports import digests

            make = getattr(digests, f"{self.routine}_digest")
            self._digest = make(self.settings)
        return self._digest

    def shown(self, path: Path) -> str:
        """A path as the admin would type it from the project directory."""
        try:
            return str(path.relative_to(self.settings.root))
        except ValueError:
            return str(path)


StepFunc = Callable[[Context], Outcome]


def one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listed(names: list[str], limit: int = LIST_ITEMS) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- daily


def step_health(ctx: Context) -> Outcome:
    """The health checks, as ``inv health`` runs them."""
    from testviper.ops import health

    config_check, _ = health.load_settings(str(ctx.settings.path) if ctx.settings.path else None)
    report = health.Report([config_check, *health.health_checks(ctx.settings)])
    return report.state, report.summary


def step_sync(ctx: Context) -> Outcome:
    """Replay the outbox (under the sync lock, like ``inv sync``); what is left and why."""
    from testviper.ops.locks import job_lock
    from testviper.reporter import outbox
    from testviper.reporter.deliver import sync

    state_dir = ctx.settings.state_dir
    if not outbox.pending_entries(state_dir):
        return OK, "outbox empty: every run delivered"
    try:
        with job_lock(state_dir, "sync"):
            outcomes = sync(ctx.settings)
    except LockHeld as exc:
        return SKIPPED, f"{exc}; that run delivers the outbox"
    delivered: dict[str, int] = {}
    errors: dict[str, str] = {}
    permanent: set[str] = set()
    for o in outcomes:
        if isinstance(o, str):  # "rp-x: disabled; run ... kept": not tried
            name, _, why = o.partition(": ")
            errors.setdefault(name, why.split(";")[0])
        elif o.ok:
            delivered[o.instance] = delivered.get(o.instance, 0) + 1
        else:  # pending (retry later), busy (another process has it) or failed for good
            errors.setdefault(o.instance, o.error or o.status)
            if o.status == "failed":
                permanent.add(o.instance)
    left: dict[str, int] = {}
    for _, entry in outbox.pending_entries(state_dir):
        left[entry.instance] = left.get(entry.instance, 0) + 1
    parts = [f"delivered {plural(n, 'run')} to {name}" for name, n in sorted(delivered.items())]
    for name, n in sorted(left.items()):
        why = errors.get(name, "not delivered")
        parts.append(f"{name}: {why}; {plural(n, 'run')} kept in the outbox for the next sync")
    if permanent:
        return CRITICAL, "; ".join(parts) + " (will not deliver until fixed: `inv deliveries`)"
    if left:
        return WARNING, "; ".join(parts)
    return OK, "; ".join(parts) or "outbox empty: every run delivered"


def step_gate(ctx: Context) -> Outcome:
    """The gate's verdict on the newest run; a failed gate is reported, not fatal."""
    from testviper.gating.gate import GateOptions, evaluate
    from testviper.ops.health import latest_run_start

    if latest_run_start(ctx.settings) is None:
        return SKIPPED, "no run in history to judge yet (`inv run`)"
    verdict = evaluate(ctx.settings, GateOptions())
    run = f"run {str(verdict.subject.get('run_id', '?'))[:13]}"
    fails = [r.message for r in verdict.ordered() if r.severity == "fail"]
    warns = [r.message for r in verdict.ordered() if r.severity == "warn"]
    also = f"; {plural(len(warns), 'warning')}" if warns else ""
    if fails:
        return WARNING, f"{run}: gate FAIL ({plural(len(fails), 'rule')}): {listed(fails, 2)}{also}"
    if warns:
        return OK, f"{run}: gate PASS with {plural(len(warns), 'warning')}: {listed(warns, 2)}"
    return OK, f"{run}: gate PASS ({plural(verdict.count('pass'), 'rule')} passed)"


def step_ci(ctx: Context) -> Outcome:
    """The configured GitHub Actions workflow's recent runs (``inv ci-status``)."""
    from testviper.ops import ci_status

    if not ci_status.configured(ctx.settings):
        return SKIPPED, "not configured: set github.repository and github.workflow"
    try:
        listing = ci_status.fetch_runs(ctx.settings)
    except ci_status.CIStatusError as exc:
        return UNKNOWN, f"could not check: {exc}"
    return ci_status.judge(listing)


def _write_digest(ctx: Context) -> str:
    """Write the period's digest as Markdown and HTML; the names, for the step line."""
    from testviper.fsutil import atomic_write

    digest = ctx.digest()
    now = datetime.now(UTC)
    ctx.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = ctx.reports_dir / f"tv_{ctx.routine}_digest_{now.strftime(PERIOD_NAME[ctx.routine])}"
    if stem.with_suffix(".md").exists():  # reports are never overwritten
        stem = stem.with_name(f"{stem.name}T{now:%H%M%S%f}Z")
    atomic_write(stem.with_suffix(".md"), digest.markdown)
    atomic_write(stem.with_suffix(".html"), digest.html)
    return f"{ctx.shown(stem)}.md/.html"


def step_digest(ctx: Context) -> Outcome:
    """The period's digest files; in the daily one, coverage regressions and new failures."""
    from testviper.reports.json_reports import regressions

    written = _write_digest(ctx)
    a = ctx.digest().analytics
    period = PERIOD[ctx.routine]
    if not a.runs:
        return OK, f"no runs in the {period}; {written}"
    text = f"{plural(len(a.runs), 'run')} in the {period}; {written}"
    if ctx.routine != "daily":
        return OK, text
    problems: list[str] = []
    if a.new_failures:
        problems.append(f"{plural(len(a.new_failures), 'new failure')}: {listed(a.new_failures)}")
    for reg in regressions(a, ctx.settings.config.gate.regression.max_drop):
        if reg["type"] == "immediate":
            problems.append(
                f"coverage drop {reg['component']} {reg['previous_coverage']} → "
                f"{reg['current_coverage']} % (-{reg['coverage_drop']} pp)"
            )
        else:
            problems.append(f"{reg['component']} declining {reg['trend_slope']:+.2f} pp/day")
    if problems:
        return WARNING, "; ".join(problems) + f"; {written}"
    return OK, text


def step_reports(ctx: Context) -> Outcome:
    """The standard report set (JSON, HTML, Markdown, badge) over the default 30 days."""
    from testviper.analytics.core import analyse, make_window
    from testviper.reports.writer import write_reports

    a = analyse(ctx.settings, make_window())
    if not a.runs:
        return SKIPPED, f"{a.state_note} (`inv run` first)"
    written = write_reports(ctx.settings, a, ctx.reports_dir)
    return OK, (
        f"{plural(len(written.files), 'file')} in {ctx.shown(ctx.reports_dir)} "
        f"({a.window.label}, {plural(len(a.runs), 'run')})"
    )


# --------------------------------------------------------------------------- weekly


def needs_runs(func: StepFunc) -> StepFunc:
    """Skip an analysis step when the period has no run: there is nothing to judge."""

    @functools.wraps(func)
    def step(ctx: Context) -> Outcome:
        if not ctx.digest().analytics.runs:
            return SKIPPED, f"no runs in the {PERIOD[ctx.routine]}: nothing to judge"
        return func(ctx)

    return step


@needs_runs
def step_trends(ctx: Context) -> Outcome:
    """Coverage trend of the week, overall and per component; declining ones warn."""
    from testviper.reports.json_reports import trend_word
    from testviper.reports.render import trend_text

    a = ctx.digest().analytics
    if a.coverage.state != "ok":
        return OK, f"overall: {a.coverage.note()}"
    named = {"overall": a.coverage, **{n: c.series for n, c in a.components.items()}}
    declining = [name for name, series in named.items() if trend_word(series) == "declining"]
    text = f"overall: {trend_text(a.coverage, '%')}"
    if declining:
        return WARNING, f"declining: {listed(declining)}; {text}"
    return OK, text


@needs_runs
def step_flaky(ctx: Context) -> Outcome:
    """Tests that passed and failed on the same commit (the gate's flaky rule)."""
    a = ctx.digest().analytics
    if a.flaky:
        names = [p.nodeid for p in a.flaky]
        return WARNING, f"{plural(len(names), 'flaky test')}: {listed(names)}"
    note = f" ({a.flaky_note})" if a.flaky_note else ""
    return OK, f"no flaky tests in the {PERIOD[ctx.routine]}{note}"


@needs_runs
def step_slow(ctx: Context) -> Outcome:
    """Tests slower than their own history (the gate's slow rule), and the slowest ones."""
    a = ctx.digest().analytics
    slowest = ", ".join(f"{t.nodeid} {t.latest:.2f}s" for t in a.slowest[:LIST_ITEMS])
    tail = f"; slowest: {slowest}" if slowest else ""
    if a.slower:
        details = [f"{p.nodeid} ({p.detail})" for p in a.slower]
        return WARNING, f"{plural(len(details), 'test')} slower than usual: {listed(details)}{tail}"
    note = f" ({a.slower_note})" if a.slower_note else ""
    return OK, f"no test slower than usual{note}{tail}"


@needs_runs
def step_config(ctx: Context) -> Outcome:
    """Configured thresholds against the coverage observed this week."""
    a = ctx.digest().analytics
    judged = {"overall": a.overall_threshold, **a.components}
    failing: list[str] = []
    unset: list[str] = []
    fine: list[str] = []
    for name, comp in judged.items():
        if comp is None or comp.fail_under is None:
            unset.append(name)
            continue
        s = comp.series
        shown = f"{name} {s.latest:.1f} %" if s.latest is not None else f"{name} n/a"
        if s.minimum is not None and s.latest is not None and s.minimum < s.latest - 0.05:
            shown += f" (lowest {s.minimum:.1f})"
        shown += f" vs fail_under {comp.fail_under:g}"
        (failing if comp.status == "fail" else fine).append(shown)
    unmeasured = [name for name in ctx.settings.config.components if name not in judged]
    parts: list[str] = []
    if failing:
        parts.append(f"below threshold: {listed(failing)}")
    if fine:
        parts.append(f"within: {listed(fine)}")
    if unset:
        parts.append(f"no threshold: {listed(unset)} (thresholds.* in the config)")
    if unmeasured:
        parts.append(f"no coverage data: {listed(unmeasured)} (check components.*.source)")
    return (WARNING if failing else OK), "; ".join(parts)


# --------------------------------------------------------------------------- monthly


@needs_runs
def step_suggestions(ctx: Context) -> Outcome:
    """Thresholds the month's coverage would support (``digests.threshold_suggestions``)."""
    from testviper.reports.digests import MIN_POINTS, MIN_SPAN_DAYS, threshold_suggestions

    found = threshold_suggestions(ctx.settings, ctx.digest().analytics)
    if not found:
        return OK, (
            f"none (a suggestion needs {MIN_POINTS} runs over {MIN_SPAN_DAYS} days with "
            "coverage well above the threshold)"
        )
    return OK, "; ".join(found)


@needs_runs
def step_durations(ctx: Context) -> Outcome:
    """Run duration growth over the month; more than 20 % of the median warns."""
    from testviper.reports.digests import duration_growth

    a = ctx.digest().analytics
    text = duration_growth(a) or "no run durations recorded"
    s = a.durations
    if s.state == "ok" and s.median and s.slope_per_day is not None:
        growth = 100 * s.slope_per_day * 30 / s.median
        if growth > DURATION_GROWTH_WARN:
            return WARNING, f"runs grow {growth:.0f} % of the median per 30 days: {text}"
    return OK, text


def _pip(ctx: Context, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pip ARGS`` with this interpreter, bounded by routines.dependency_timeout.

    One retry and a 15 s socket timeout: pip's defaults (5 retries with back-off, per
    package) turn an unreachable index into many minutes of waiting in a cron job.
    """
    return _python(
        ctx, "pip", *args, "--disable-pip-version-check", "--retries", "1", "--timeout", "15"
    )


def _python(ctx: Context, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m MODULE ARGS``; a timeout comes back as a failed process, not raised."""
    limit = ctx.settings.config.routines.dependency_timeout
    cmd = [sys.executable, "-m", module, *args]
    try:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        why = f"{module} took longer than routines.dependency_timeout ({limit:g} s)"
        return subprocess.CompletedProcess(cmd, -1, "", why)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"


def step_outdated(ctx: Context) -> Outcome:
    """Installed packages with a newer release on the package index (``pip list --outdated``)."""
    done = _pip(ctx, "list", "--outdated", "--format=json")
    if done.returncode != 0:
        return UNKNOWN, f"could not check: pip list --outdated failed: {_last_line(done.stderr)}"
    try:
        outdated = json.loads(done.stdout)
    except ValueError:
        return UNKNOWN, "could not check: pip list --outdated did not print JSON"
    if not outdated:
        # pip reports an unreachable index as "nothing newer": ask which packages it found.
        current = _pip(ctx, "list", "--uptodate", "--format=json")
        try:
            found = json.loads(current.stdout) if current.returncode == 0 else []
        except ValueError:
            found = []
        if not found:
            return UNKNOWN, (
                "could not check: the package index answered for no installed package "
                "(no network, or pip's index-url setting)"
            )
        return OK, f"all {plural(len(found), 'package')} up to date"
    names = [f"{p['name']} {p['version']} → {p['latest_version']}" for p in outdated]
    return OK, f"{plural(len(names), 'outdated package')}: {listed(names, 5)}"


def step_audit(ctx: Context) -> Outcome:
    """Known vulnerabilities of the installed packages, with pip-audit if it is installed."""
    import importlib.util

    if importlib.util.find_spec("pip_audit") is None:
        return SKIPPED, "not available: pip-audit is not installed (pip install pip-audit)"
    done = _python(ctx, "pip_audit", "--format", "json", "--progress-spinner", "off")
    try:
        report = json.loads(done.stdout)
        deps = report["dependencies"] if isinstance(report, dict) else report
        vulnerable = [d for d in deps if d.get("vulns")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return UNKNOWN, f"could not check: pip-audit failed: {_last_line(done.stderr)}"
    if not vulnerable:
        return OK, f"no known vulnerabilities in {plural(len(deps), 'package')}"
    shown: list[str] = []
    for d in vulnerable:
        ids = ", ".join(v.get("id", "?") for v in d["vulns"])
        fixes = sorted({f for v in d["vulns"] for f in v.get("fix_versions") or []})
        fix = f", fixed in {fixes[-1]}" if fixes else ", no fix yet"
        shown.append(f"{d.get('name')} {d.get('version')} ({ids}{fix})")
    return CRITICAL, f"{plural(len(shown), 'vulnerable package')}: {listed(shown, 5)}"


STEPS: dict[str, dict[str, StepFunc]] = {
    "daily": {
        "health": step_health,
        "sync": step_sync,
        "gate": step_gate,
        "ci": step_ci,
        "digest": step_digest,
        "reports": step_reports,
    },
    "weekly": {
        "digest": step_digest,
        "trends": step_trends,
        "flaky": step_flaky,
        "slow": step_slow,
        "config": step_config,
    },
    "monthly": {
        "digest": step_digest,
        "suggestions": step_suggestions,
        "durations": step_durations,
        "outdated": step_outdated,
        "audit": step_audit,
    },
}


# --------------------------------------------------------------------------- running


def masker(settings: Settings) -> Masker:
    """Masks ReportPortal keys, alert URLs and the GitHub token in every line."""
    from testviper.ops import alerts

    token = settings.secret(settings.config.github.token_env)
    return Masker([*alerts.masker(settings).secrets, token])


def _log_traceback(settings: Settings, routine: str, step: str, mask: Masker) -> str:
    """Append the current exception's traceback to the routines log; its path ('' if not)."""
    path = settings.state_dir / "logs" / LOG
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {routine} {step}:\n{mask(traceback.format_exc())}\n")
    except OSError:
        return ""
    return str(path)


def run_step(ctx: Context, name: str, func: StepFunc, mask: Masker) -> Step:
    """One step in its guard: never raises, always one line."""
    started = time.monotonic()
    try:
        state, detail = func(ctx)
    except LockHeld as exc:
        state, detail = SKIPPED, str(exc)
    except UserError as exc:
        state, detail = CRITICAL, str(exc)
    except Exception as exc:
        where = _log_traceback(ctx.settings, ctx.routine, name, mask)
        state = UNKNOWN
        detail = f"internal error: {type(exc).__name__}: {exc}"
        detail += f" (traceback in {ctx.shown(Path(where))})" if where else ""
    return Step(name, state, one_line(mask(detail)), time.monotonic() - started)


def chosen_steps(settings: Settings, routine: str, only: list[str] | None = None) -> list[str]:
    """The configured steps of ``routine``, or the ``only`` ones (checked, in default order)."""
    configured: list[str] = getattr(settings.config.routines, routine)
    if not only:
        return configured
    known = ROUTINE_STEPS[routine]
    for name in only:
        if name not in known:
            raise UserError(f"--step {name}: not a {routine} step (known: {', '.join(known)})")
    return [name for name in known if name in only]


def send_alert(settings: Settings, result: Result) -> Step:
    """The summary to the alert channels: a line, counted only if the config is broken.

    Delivery trouble does not change the routine's exit code (the alert is what failed,
    not the routine), but a missing or insecure webhook URL would silence every future
    alert, so it is CRITICAL.
    """
    from testviper.ops import alerts

    started = time.monotonic()
    if not settings.config.alerts.channels:
        return Step("alert", SKIPPED, "not configured: no alerts.channels", counted=False)
    severity = ALERT_SEVERITY[result.state]
    title = f"TestViper {result.routine} {result.state}: {settings.project_name}"
    try:
        outcomes = alerts.notify(settings, severity, title, result.alert_text())
    except UserError as exc:
        return Step("alert", CRITICAL, one_line(str(exc)), time.monotonic() - started)
    failed = [o for o in outcomes if o.status == "failed"]
    state = WARNING if failed else OK
    text = "; ".join(o.line() for o in outcomes)
    return Step("alert", state, one_line(text), time.monotonic() - started, counted=False)


def run_routine(
    settings: Settings,
    routine: str,
    only: list[str] | None = None,
    emit: Callable[[str], None] = print,
    alert: bool = True,
) -> Result:
    """Run the routine's steps under its lock, emitting each line as it is done.

    LockHeld (exit 75) when another run of the same routine holds the lock.
    """
    from testviper.ops.locks import job_lock

    names = chosen_steps(settings, routine, only)
    started = time.monotonic()
    with job_lock(settings.state_dir, routine):
        ctx = Context(settings, routine)
        mask = masker(settings)
        result = Result(routine)
        for name in names:
            step = run_step(ctx, name, STEPS[routine][name], mask)
            result.steps.append(step)
            emit(step.line(routine))
        result.duration = time.monotonic() - started
        if alert:
            step = send_alert(settings, result)
            result.steps.append(step)
            emit(step.line(routine))
        emit(mask(result.summary()))
    return result
