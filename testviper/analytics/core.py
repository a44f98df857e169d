"""Analytics over the history for one window of runs on one branch.

Everything comes from history queries (through the gate's read layer, ``gating.db``):
no old JSON file is read again. Flaky and slower tests and threshold verdicts reuse the
gate's own rules (``gating.tests_health``, ``gating.thresholds``), so a report and the
gate never disagree.

Windows: ``since`` ("7d", "2w", "12h"), ``days`` (N days back from now) or ``runs``
(the last N runs). Runs are those of the configured project; the branch is ``branch``
or, by default, the branch of the newest run (all runs when that has none).

Pass rate is passed / (passed + failed + error), in %; skipped and xfail runs do not
count. An empty window, or one run, gives ``state`` ``no_data`` / ``insufficient_data``
with ``None`` figures, never zeros.
"""

import re
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from testviper.analytics.stats import DAY, Series
from testviper.config import Settings
from testviper.coverage_data import Counts
from testviper.errors import UserError

SINCE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
UNITS = {"h": 3600, "d": DAY, "w": 7 * DAY}
DEFAULT_DAYS = 30
MESSAGE_CHARS = 300
NAME_CHARS = 1000


def parse_since(text: str) -> timedelta:
    """``7d``, ``2w``, ``12h`` as a timedelta."""
    match = SINCE.match(text or "")
    if not match or int(match.group(1)) == 0:
        raise UserError(f"--since: '{text}' is not a period like 12h, 7d or 2w")
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


@dataclass
class Window:
    kind: str  # since | days | runs
    value: str
    start: datetime | None  # None for "runs" until runs are found
    end: datetime

    @property
    def label(self) -> str:
        if self.kind == "runs":
            return f"last {self.value} runs"
        if self.kind == "days":
            return f"last {self.value} days"
        return f"since {self.value} ago"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "label": self.label,
            "start": _iso(self.start),
            "end": _iso(self.end),
        }


def make_window(
    since: str | None = None,
    days: int | None = None,
    runs: int | None = None,
    now: datetime | None = None,
) -> Window:
    given = [name for name, v in (("--since", since), ("--days", days), ("--runs", runs)) if v]
    if len(given) > 1:
        raise UserError(f"give one of --since, --days, --runs, not {' and '.join(given)}")
    end = now or datetime.now(UTC).replace(tzinfo=None)
    if runs is not None and runs != 0:
        if runs < 1:
            raise UserError("--runs: must be at least 1")
        return Window("runs", str(runs), None, end)
    if since:
        return Window("since", since.strip(), end - parse_since(since), end)
    n = days or DEFAULT_DAYS
    if n < 1:
        raise UserError("--days: must be at least 1")
    return Window("days", str(n), end - timedelta(days=n), end)


@dataclass
class RunInfo:
    id: str
    started_at: datetime
    status: str
    duration: float | None
    git_branch: str | None
    git_commit: str | None
    python: str | None
    label: str | None
    counts: dict[str, int]
    cov_percent: float | None

    @property
    def pass_rate(self) -> float | None:
        judged = self.counts["passed"] + self.counts["failed"] + self.counts["errors"]
        return 100.0 * self.counts["passed"] / judged if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": _iso(self.started_at),
            "status": self.status,
            "duration": self.duration,
            "git_branch": self.git_branch,
            "git_commit": self.git_commit,
            "python": self.python,
            "label": self.label,
            "counts": self.counts,
            "pass_rate": None if self.pass_rate is None else round(self.pass_rate, 3),
            "cov_percent": None if self.cov_percent is None else round(self.cov_percent, 3),
        }


@dataclass
class ComponentStatus:
    """A component's coverage trend and its threshold verdict on the newest run."""

    name: str
    series: Series
    files: int | None = None
    statements: int | None = None
    missing: int | None = None
    fail_under: float | None = None
    warn_under: float | None = None
    status: str = "none"  # pass | warn | fail | info (no threshold / no data) from the gate
    message: str = ""


@dataclass
class TestTrend:
    __test__ = False

    nodeid: str
    latest: float
    outcome: str
    series: Series


@dataclass
class Problem:
    nodeid: str
    detail: str


@dataclass
class Analytics:
    project: str
    branch: str | None
    window: Window
    generated_at: datetime
    runs: list[RunInfo] = field(default_factory=list)
    coverage: Series = field(default_factory=lambda: Series("coverage", "%"))
    components: dict[str, ComponentStatus] = field(default_factory=dict)
    overall_threshold: ComponentStatus | None = None
    tests_total: Series = field(default_factory=lambda: Series("test count", "tests"))
    pass_rate: Series = field(default_factory=lambda: Series("pass rate", "%"))
    durations: Series = field(default_factory=lambda: Series("run duration", "s"))
    slowest: list[TestTrend] = field(default_factory=list)
    slower: list[Problem] = field(default_factory=list)  # gate's slow rule
    slower_note: str = ""
    flaky: list[Problem] = field(default_factory=list)  # gate's flaky rule
    flaky_note: str = ""
    failures: list[Problem] = field(default_factory=list)  # newest run
    new_failures: list[str] = field(default_factory=list)  # newest vs the run before it
    new_failures_note: str = ""
    deliveries: dict[str, int] = field(default_factory=dict)  # status -> count, in window
    delivery_backlog: int = 0  # pending + failed, whole history
    profiles: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def latest(self) -> RunInfo | None:
        return self.runs[-1] if self.runs else None

    @property
    def previous(self) -> RunInfo | None:
        return self.runs[-2] if len(self.runs) >= 2 else None

    @property
    def state(self) -> str:
        """no_data (no run), insufficient_data (one run: no trend), or ok."""
        if not self.runs:
            return "no_data"
        return "insufficient_data" if len(self.runs) < 2 else "ok"

    @property
    def state_note(self) -> str:
        if not self.runs:
            return (
                f"no runs in history for {self.window.label}"
                + (f" on branch {self.branch}" if self.branch else "")
                + ": nothing to report"
            )
        if len(self.runs) < 2:
            return "insufficient data: one run in the window; trends need at least two"
        return ""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def _dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo else value
    return datetime.fromisoformat(str(value))


def cleaner(settings: Settings) -> Any:
    """Mask secrets, make project paths relative and hide the home directory in text."""
    from testviper.reporter.masking import masker_for

    mask = masker_for(settings)
    root = str(settings.root)
    home = str(Path.home())

    def clean(text: str | None, limit: int = MESSAGE_CHARS) -> str:
        if not text:
            return ""
        text = mask(text).replace(root + "/", "").replace(root, ".")
        if home and home != "/":
            text = text.replace(home, "~")
        return text if len(text) <= limit else text[: limit - 1] + "…"

    return clean


def analyse(
    settings: Settings,
    window: Window,
    branch: str | None = None,
    db: Any = None,
) -> Analytics:
    """All figures for ``window`` (one branch) from the history."""
    from testviper.gating.db import Reader

    own = db is None
    reader = Reader(settings) if own else db
    try:
        return _analyse(settings, reader, window, branch)
    finally:
        if own:
            reader.close()


RUN_COLUMNS = (
    "id, started_at, status, duration, git_branch, git_commit, python, label, tests_total, "
    "passed, failed, errors, skipped, xfailed, xpassed, cov_percent"
)


def _analyse(settings: Settings, db: Any, window: Window, branch: str | None) -> Analytics:
    project = settings.project_name
    if branch is None:
        newest = db.rows(
            "SELECT git_branch FROM runs WHERE project = :p ORDER BY id DESC LIMIT 1", p=project
        )
        branch = newest[0].git_branch if newest else None
    out = Analytics(project, branch, window, datetime.now(UTC).replace(tzinfo=None))
    where = "project = :p" + (" AND git_branch = :b" if branch else "")
    params: dict[str, Any] = {"p": project, "b": branch}
    if window.kind == "runs":
        rows = db.rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} ORDER BY id DESC LIMIT :n",
            n=int(window.value),
            **params,
        )[::-1]
    else:
        assert window.start is not None
        rows = db.rows(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {where} AND started_at >= :start "
            "AND started_at <= :end ORDER BY id",
            start=_sql_time(window.start),
            end=_sql_time(window.end),
            **params,
        )
    for r in rows:
        counts = {
            k: int(getattr(r, k) or 0)
            for k in ("tests_total", "passed", "failed", "errors", "skipped", "xfailed", "xpassed")
        }
        out.runs.append(
            RunInfo(
                r.id,
                _dt(r.started_at),
                r.status,
                r.duration,
                r.git_branch,
                r.git_commit,
                r.python,
                r.label,
                counts,
                r.cov_percent,
            )
        )
    if not out.runs:
        out.delivery_backlog = _backlog(db)
        return out
    if window.start is None:
        window.start = out.runs[0].started_at
    origin = window.start
    for series in (out.coverage, out.tests_total, out.pass_rate, out.durations):
        series.origin = origin
    for run in out.runs:
        if run.cov_percent is not None:
            out.coverage.points.append((run.started_at, run.cov_percent, run.id))
        out.tests_total.points.append((run.started_at, float(run.counts["tests_total"]), run.id))
        if run.pass_rate is not None:
            out.pass_rate.points.append((run.started_at, run.pass_rate, run.id))
        if run.duration is not None:
            out.durations.points.append((run.started_at, run.duration, run.id))
    lo, hi = out.runs[0].id, out.runs[-1].id
    span = {"p": project, "b": branch, "lo": lo, "hi": hi}
    on_branch = "AND r.git_branch = :b " if branch else ""
    in_window = f"r.project = :p {on_branch}AND r.id >= :lo AND r.id <= :hi"
    clean = cleaner(settings)
    _components(settings, db, out, in_window, span)
    _tests(settings, db, out, in_window, span, clean)
    status_rows = db.rows(
        "SELECT d.status AS status, COUNT(*) AS n FROM deliveries d JOIN runs r ON r.id = d.run_id "
        f"WHERE {in_window} GROUP BY d.status",
        **span,
    )
    out.deliveries = {row.status: int(row.n) for row in status_rows}
    out.delivery_backlog = _backlog(db)
    out.profiles = _profiles(db, in_window, span, clean)
    return out


def _sql_time(value: datetime) -> str:
    # SQLite stores SQLAlchemy DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff': compare alike.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _backlog(db: Any) -> int:
    rows = db.rows("SELECT COUNT(*) AS n FROM deliveries WHERE status IN ('pending', 'failed')")
    return int(rows[0].n) if rows else 0


def _components(settings: Settings, db: Any, out: Analytics, in_window: str, span: dict) -> None:
    from testviper.gating import thresholds

    when = {run.id: run.started_at for run in out.runs}
    latest_id = out.runs[-1].id
    latest: dict[str, Any] = {}
    for row in db.rows(
        "SELECT c.run_id AS run_id, c.component AS component, c.files AS files, "
        "c.statements AS statements, c.missing AS missing, c.branches AS branches, "
        "c.covered_branches AS covered_branches, c.percent AS percent "
        f"FROM component_coverage c JOIN runs r ON r.id = c.run_id WHERE {in_window} "
        "ORDER BY c.run_id",
        **span,
    ):
        comp = out.components.get(row.component)
        if comp is None:
            comp = out.components[row.component] = ComponentStatus(
                row.component, Series(f"{row.component} coverage", "%", origin=out.window.start)
            )
        if row.percent is not None:
            comp.series.points.append((when[row.run_id], row.percent, row.run_id))
        if row.run_id == latest_id:
            latest[row.component] = row
    # The gate's threshold rules on the newest run's stored component totals.
    counts = {
        name: (
            row.files,
            Counts(row.statements, row.missing, row.branches, row.covered_branches),
            None,
        )
        for name, row in latest.items()
    }
    levels = settings.config.thresholds.components
    for name in levels:  # no data: the rule says "no measurable statements" (info)
        counts.setdefault(name, (0, Counts(), None))
    results = {
        r.rule.removeprefix("coverage.component."): r
        for r in thresholds.components(settings, counts)
    }
    for name in sorted(set(out.components) | set(levels)):
        comp = out.components.setdefault(
            name, ComponentStatus(name, Series(f"{name} coverage", "%", origin=out.window.start))
        )
        level = levels.get(name)
        if level is not None:
            comp.fail_under, comp.warn_under = level.fail_under, level.warn_under
        row = latest.get(name)
        if row is not None:
            comp.files, comp.statements, comp.missing = row.files, row.statements, row.missing
        if row is None:
            comp.status, comp.message = "info", "no coverage for this component in the newest run"
        elif name in results:
            comp.status, comp.message = results[name].severity, results[name].message
        else:
            comp.status, comp.message = "info", "no threshold set"
    out.components = dict(sorted(out.components.items()))
    newest = out.runs[-1]
    cov = db.rows(
        "SELECT cov_statements, cov_missing, cov_branches, cov_covered_branches FROM runs "
        "WHERE id = :id",
        id=newest.id,
    )
    overall = ComponentStatus("overall", out.coverage)
    level = settings.config.thresholds.overall
    overall.fail_under, overall.warn_under = level.fail_under, level.warn_under
    if cov and cov[0].cov_statements is not None:
        c = cov[0]
        totals = Counts(
            c.cov_statements, c.cov_missing, c.cov_branches or 0, c.cov_covered_branches or 0
        )
        result = thresholds.overall(settings, SimpleNamespace(totals=totals))  # type: ignore[arg-type]
        overall.status, overall.message = result.severity, result.message
        overall.statements, overall.missing = totals.statements, totals.missing
    else:
        overall.status, overall.message = "info", "the newest run has no coverage data"
    out.overall_threshold = overall


def _tests(
    settings: Settings, db: Any, out: Analytics, in_window: str, span: dict, clean: Any
) -> None:
    from testviper.gating import tests_health
    from testviper.gating.sources import TestRow

    latest = out.runs[-1]
    rows = db.rows(
        "SELECT nodeid, outcome, duration, message FROM tests WHERE run_id = :id ORDER BY id",
        id=latest.id,
    )
    current = [TestRow(r.nodeid, r.outcome, r.duration) for r in rows]
    bad = [r for r in rows if r.outcome in tests_health.BAD]
    out.failures = [Problem(clean(r.nodeid, NAME_CHARS), clean(r.message)) for r in bad]
    # New failures: failing now, not failing in the previous run of the window.
    previous = out.previous
    if previous is None:
        out.new_failures_note = "no earlier run in the window to compare with"
    else:
        before = {
            r.nodeid
            for r in db.rows(
                "SELECT nodeid FROM tests WHERE run_id = :id AND outcome IN ('failed', 'error')",
                id=previous.id,
            )
        }
        out.new_failures = [clean(n, NAME_CHARS) for n in sorted({r.nodeid for r in bad} - before)]
        out.new_failures_note = f"compared with run {previous.id}"
    # Flaky and slower: the gate's rules, as of the newest run.
    flaky = tests_health.flaky(settings, db, latest.id)
    out.flaky = [
        Problem(clean(r.rule.removeprefix("tests.flaky."), NAME_CHARS), clean(r.message))
        for r in flaky
        if r.rule.startswith("tests.flaky.")
    ]
    if not flaky:
        out.flaky_note = "flaky detection is off (gate.tests.flaky)"
    elif not out.flaky:
        out.flaky_note = clean(flaky[0].message)
    slow = tests_health.slow(settings, db, current, latest.id)
    out.slower = [
        Problem(clean(r.rule.removeprefix("tests.slow."), NAME_CHARS), clean(r.message))
        for r in slow
        if r.rule.startswith("tests.slow.")
    ]
    notes = [r.message for r in slow if r.rule == "tests.slow"]
    out.slower_note = clean(notes[0]) if notes else ("" if slow else "slow detection is off")
    # The slowest tests of the newest run and their durations over the window.
    top = sorted(rows, key=lambda r: (-r.duration, r.nodeid))[: settings.config.reports.slowest]
    if not top:
        return
    from testviper.gating.db import in_list

    params: dict[str, Any] = dict(span)
    names = [r.nodeid for r in top]
    when = {run.id: run.started_at for run in out.runs}
    samples: dict[str, list[tuple[datetime, float, str]]] = {n: [] for n in names}
    for row in db.rows(
        "SELECT t.nodeid AS nodeid, t.run_id AS run_id, t.duration AS duration FROM tests t "
        f"JOIN runs r ON r.id = t.run_id WHERE {in_window} AND t.nodeid IN "
        + in_list("n", names, params)
        + " ORDER BY t.run_id",
        **params,
    ):
        samples[row.nodeid].append((when[row.run_id], row.duration, row.run_id))
    for r in top:
        series = Series(f"{r.nodeid} duration", "s", samples[r.nodeid], origin=out.window.start)
        out.slowest.append(TestTrend(clean(r.nodeid, NAME_CHARS), r.duration, r.outcome, series))


def _profiles(db: Any, in_window: str, span: dict, clean: Any) -> list[dict[str, Any]]:
    rows = db.rows(
        "SELECT p.target AS target, p.wall AS wall, p.peak_rss AS peak_rss, "
        "p.cpu_mean AS cpu_mean FROM profiles p JOIN runs r ON r.id = p.run_id "
        f"WHERE {in_window} ORDER BY p.id",
        **span,
    )
    by_target: dict[str, list[Any]] = {}
    for row in rows:
        by_target.setdefault(row.target, []).append(row)
    out = []
    for target, items in sorted(by_target.items()):
        walls = [i.wall for i in items]
        rss = [i.peak_rss for i in items if i.peak_rss is not None]
        out.append(
            {
                "target": clean(target),
                "samples": len(items),
                "latest_wall": round(walls[-1], 3),
                "median_wall": round(statistics.median(walls), 3),
                "max_peak_rss": max(rss) if rss else None,
            }
        )
    return out
