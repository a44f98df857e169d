"""Analytics over a real SQLite history built through the real store, with known values."""

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from testviper.analytics import analyse, mad, make_window, parse_since, slope
from testviper.analytics.stats import Series
from testviper.config import Settings, load
from testviper.coverage_data import Counts
from testviper.errors import UserError
from testviper.history import schema
from testviper.history.records import RunRecord, TestResult
from testviper.history.store import save_run
from testviper.ids import new_run_id
from testviper.reports import json_reports
from testviper.reports.digests import daily_digest, monthly_digest, weekly_digest
from testviper.runner.run import connect

START = datetime(2026, 3, 1, 9, 0)
CONFIG = """
project:
  name: demo
components:
  xradio:
    source: [src/xradio]
  astroviper:
    source: [src/astroviper]
thresholds:
  overall: {fail_under: 50}
  components:
    xradio: {fail_under: 70}
    astroviper: {fail_under: 60, warn_under: 65}
"""
# Deterministic "noise" (pp), mean 0.
NOISE = [0.3, -0.2, 0.1, -0.3, 0.2, -0.1, 0.0, 0.25, -0.25, 0.0]


def make_settings(root: Path, extra: str = "") -> Settings:
    root.mkdir(parents=True, exist_ok=True)
    (root / "testviper.yaml").write_text(textwrap.dedent(CONFIG) + extra)
    return load(str(root / "testviper.yaml"), check_paths=False)


def counts(percent: float) -> Counts:
    """Counts whose combined percentage is ``percent`` to 0.01 pp."""
    return Counts(statements=10000, missing=round(10000 - 100 * percent))


def add_run(
    settings: Settings,
    when: datetime,
    cov: float | None = None,
    components: dict[str, float] | None = None,
    tests: dict[str, Any] | None = None,
    branch: str | None = "main",
    commit: str = "c0ffee",
    duration: float = 60.0,
    project: str = "demo",
) -> str:
    """Save one run (the real store, real SQLite); ``tests``: nodeid -> outcome or
    (outcome, duration) or (outcome, duration, message, log)."""
    run_id = new_run_id(int(when.timestamp() * 1e9))
    results = []
    for nodeid, spec in (tests or {}).items():
        spec = (spec,) if isinstance(spec, str) else tuple(spec)
        outcome, dur, message, log = spec + ("passed", 0.01, None, None)[len(spec) :]
        results.append(
            TestResult(
                nodeid=nodeid,
                outcome=outcome,
                phase="call",
                duration=dur,
                message=message,
                log=log,
            )
        )
    record = RunRecord(
        id=run_id,
        project=project,
        status="complete",
        started_at=when,
        finished_at=when + timedelta(seconds=duration),
        command=["pytest"],
        run_dir="",
        environment={"git_branch": branch, "git_commit": commit, "git_dirty": False},
        tests=results,
    )
    if cov is not None:
        record.coverage = counts(cov)
    record.components = {name: (3, counts(p)) for name, p in (components or {}).items()}
    save_run(connect(settings), record)
    return run_id


def rising_history(settings: Settings, days: int = 20, per_day: int = 1) -> None:
    """Coverage 60 % + 0.5 pp/day with noise; xradio 80 + 0.2/day; astroviper flat 62."""
    k = 0
    for day in range(days):
        for i in range(per_day):
            when = START + timedelta(days=day, hours=3 * i)
            noise = NOISE[k % len(NOISE)]
            k += 1
            add_run(
                settings,
                when,
                cov=60 + 0.5 * day + noise,
                components={"xradio": 80 + 0.2 * day + noise, "astroviper": 62 + noise},
                tests={"t.py::a": "passed", "t.py::b": ("passed", 0.5)},
                duration=60 + day,
            )


def window(days: int = 30, end_day: int = 20) -> Any:
    return make_window(days=days, now=START + timedelta(days=end_day))


# --- statistics -----------------------------------------------------------------------


def test_slope_and_mad_primitives() -> None:
    assert slope([(0, 1), (1, 3), (2, 5)]) == pytest.approx(2.0)
    assert slope([(0, 1)]) is None
    assert slope([(1, 1), (1, 2)]) is None  # one instant: no trend
    assert mad([70, 71, 72, 90, 71]) == 1
    assert mad([]) is None


def test_since_parsing_and_window_choice() -> None:
    assert parse_since("7d") == timedelta(days=7)
    assert parse_since("2w") == timedelta(days=14)
    assert parse_since("12h") == timedelta(hours=12)
    for bad in ("7", "d", "0d", "7y", "-1d"):
        with pytest.raises(UserError, match="--since"):
            parse_since(bad)
    with pytest.raises(UserError, match="one of --since, --days, --runs"):
        make_window(since="7d", runs=3)
    assert make_window().label == "last 30 days"


# --- coverage trends ------------------------------------------------------------------


def test_coverage_slope_is_per_day_from_start_times(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    # Three runs a day, three hours apart: a per-run slope would be a third of this.
    rising_history(s, days=20, per_day=3)
    a = analyse(s, window())
    assert a.state == "ok"
    assert len(a.runs) == 60
    assert a.coverage.slope_per_day == pytest.approx(0.5, abs=0.02)
    assert a.components["xradio"].series.slope_per_day == pytest.approx(0.2, abs=0.02)
    assert a.components["astroviper"].series.slope_per_day == pytest.approx(0.0, abs=0.02)
    # Latest vs window start: the last run is day 19 (noise of run 59), the first day 0.
    assert a.coverage.first == pytest.approx(60.3)
    assert a.coverage.latest == pytest.approx(60 + 9.5 + NOISE[59 % 10])
    assert a.coverage.change == pytest.approx(a.coverage.latest - a.coverage.first)
    data = json_reports.coverage_analytics(a)
    assert data["summary"]["components"]["xradio"]["trend"] == "improving"
    assert data["summary"]["components"]["astroviper"]["trend"] == "stable"
    assert data["summary"]["overall"]["slope_per_day"] == pytest.approx(0.5, abs=0.02)


def test_one_run_a_day_gives_the_same_slope(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    rising_history(s, days=20, per_day=1)
    a = analyse(s, window())
    assert a.coverage.slope_per_day == pytest.approx(0.5, abs=0.03)
    assert a.durations.slope_per_day == pytest.approx(1.0)  # 60 s + 1 s/day, no noise


def test_median_and_mad(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    for day, value in enumerate([70, 71, 72, 90, 71]):
        add_run(s, START + timedelta(days=day), cov=value, components={"xradio": value})
    a = analyse(s, window(end_day=5))
    series = a.components["xradio"].series
    assert series.median == pytest.approx(71)
    assert series.mad == pytest.approx(1)
    assert (series.minimum, series.maximum) == (pytest.approx(70), pytest.approx(90))
    assert a.coverage.median == pytest.approx(71)


def test_window_by_runs_since_and_branch(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    for day in range(10):
        add_run(s, START + timedelta(days=day), cov=50 + day, branch="main")
    add_run(s, START + timedelta(days=10), cov=10, branch="feature")
    add_run(s, START + timedelta(days=10, hours=1), cov=99, project="other")
    end = START + timedelta(days=10, hours=2)
    # Default branch: the newest run's (feature: one run).
    a = analyse(s, make_window(runs=5, now=end))
    assert a.branch == "feature"
    assert [r.cov_percent for r in a.runs] == [pytest.approx(10)]
    a = analyse(s, make_window(runs=3, now=end), branch="main")
    assert [round(r.cov_percent) for r in a.runs] == [57, 58, 59]
    a = analyse(s, make_window(since="72h", now=end), branch="main")
    assert [round(r.cov_percent) for r in a.runs] == [58, 59]  # days 8 and 9 (9:00)
    a = analyse(s, make_window(days=30, now=end), branch="main")
    assert len(a.runs) == 10


def test_empty_history_says_so(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    a = analyse(s, window())
    assert a.state == "no_data"
    assert "no runs in history" in a.state_note
    assert a.coverage.state == "no_data"
    assert a.coverage.latest is None and a.coverage.slope_per_day is None
    threshold = json_reports.threshold(a)
    assert threshold["overall_result"] == "NO_DATA"
    assert threshold["overall_coverage"] is None
    summary = json_reports.analytics_summary(a)
    assert summary["key_insights"]["total_tests_analyzed"] is None
    assert summary["report_info"]["data_state"] == "no_data"


def test_one_run_is_insufficient_data_not_a_zero_trend(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    add_run(s, START, cov=75, components={"xradio": 80}, tests={"t.py::a": "passed"})
    a = analyse(s, window(end_day=1))
    assert a.state == "insufficient_data"
    assert a.coverage.latest == pytest.approx(75)
    assert a.coverage.slope_per_day is None and a.coverage.change is None
    assert a.coverage.as_dict()["note"].startswith("insufficient data")
    data = json_reports.coverage_analytics(a)
    assert data["summary"]["components"]["xradio"]["trend"] == "insufficient_data"
    assert data["summary"]["components"]["xradio"]["slope_per_day"] is None
    regression = json_reports.regression(a)
    assert regression["component_trends"]["xradio"] == {
        "has_trend": False,
        "reason": "insufficient_data",
        "points": 1,
    }


# --- tests: flaky, slow, new failures ---------------------------------------------------


def test_flaky_slow_and_new_failures_exact(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    for day in range(5):
        add_run(
            s,
            START + timedelta(days=day),
            cov=70,
            commit="aaa",
            tests={
                "t.py::steady": ("passed", 1.0),
                "t.py::flaky": "passed" if day % 2 else "failed",
                "t.py::old_bug": "failed",
                "t.py::quick": ("passed", 0.1),
            },
        )
    add_run(
        s,
        START + timedelta(days=5),
        cov=70,
        commit="bbb",
        tests={
            "t.py::steady": ("passed", 3.0),  # 3x its median 1 s, 2 s over: slower
            "t.py::flaky": "passed",
            "t.py::old_bug": "failed",
            "t.py::quick": ("passed", 0.3),  # 3x but under the 0.5 s floor
            "t.py::broken": ("failed", 0.2, "AssertionError: 1 != 2"),
        },
    )
    a = analyse(s, window(end_day=6))
    assert [p.nodeid for p in a.flaky] == ["t.py::flaky"]
    assert "both passed and failed on commit aaa" in a.flaky[0].detail
    assert [p.nodeid for p in a.slower] == ["t.py::steady"]
    assert a.new_failures == ["t.py::broken"]
    assert sorted(p.nodeid for p in a.failures) == ["t.py::broken", "t.py::old_bug"]
    assert [t.nodeid for t in a.slowest][:3] == ["t.py::steady", "t.py::quick", "t.py::broken"]
    steady = a.slowest[0]
    assert steady.series.n == 6
    assert steady.series.median == pytest.approx(1.0)
    assert a.pass_rate.latest == pytest.approx(300 / 5)


def test_threshold_status_reuses_the_gate_rules(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    add_run(s, START, cov=55, components={"xradio": 65, "astroviper": 63})
    a = analyse(s, window(end_day=1))
    assert a.components["xradio"].status == "fail"
    assert "under fail_under 70" in a.components["xradio"].message
    assert a.components["astroviper"].status == "warn"
    assert a.overall_threshold is not None and a.overall_threshold.status == "pass"
    data = json_reports.threshold(a)
    assert data["overall_result"] == "FAIL"
    assert data["components"]["xradio"]["action"] == "FAIL"
    assert data["components"]["xradio"]["gap"] == pytest.approx(-5)
    assert data["summary"] == {
        "total_components": 2,
        "passing": 1,
        "warnings": 1,
        "failing": 1,
        "no_threshold": 0,
    }


def test_deliveries_and_profiles(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    ids = [add_run(s, START + timedelta(days=d), cov=70) for d in range(3)]
    history = connect(s)
    now = datetime(2026, 3, 5)
    with history.begin() as conn:
        for run_id, status in zip(ids, ("delivered", "failed", "pending"), strict=True):
            conn.execute(
                schema.deliveries.insert(),
                {"run_id": run_id, "instance": "main", "status": status, "updated_at": now},
            )
        for run_id, wall in zip(ids, (10.0, 12.0, 14.0), strict=True):
            conn.execute(
                schema.profiles.insert(),
                {"run_id": run_id, "target": "bench_x", "created_at": now, "wall": wall},
            )
    a = analyse(s, window(end_day=4))
    assert a.deliveries == {"delivered": 1, "failed": 1, "pending": 1}
    assert a.delivery_backlog == 2
    assert a.profiles == [
        {
            "target": "bench_x",
            "samples": 3,
            "latest_wall": 14.0,
            "median_wall": 12.0,
            "max_peak_rss": None,
        }
    ]
    with history.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.profiles)).scalar() == 3


# --- digests ----------------------------------------------------------------------------


def test_monthly_digest_suggests_raising_a_threshold(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    for day in range(31):
        add_run(
            s,
            START + timedelta(days=day),
            cov=70,
            components={"xradio": 78.5 + (day % 3) * 0.5, "astroviper": 61 + (day % 2)},
            duration=100 + 2 * day,
        )
    digest = monthly_digest(s, now=START + timedelta(days=30))
    assert "xradio has stayed ≥ 78 % for 30 days: raise its threshold from 70 to 75" in (
        digest.markdown
    )
    assert "astroviper" not in "".join(
        line for line in digest.markdown.splitlines() if "raise its threshold" in line
    )
    assert "+60.0 s per 30 days" in digest.markdown
    assert "Threshold suggestions" in digest.html


def test_daily_and_weekly_digests(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    add_run(s, START, cov=70, tests={"t.py::a": "passed"})
    add_run(s, START + timedelta(days=6), cov=72, tests={"t.py::a": "passed"})
    add_run(s, START + timedelta(days=6, hours=2), cov=69, tests={"t.py::a": "failed"})
    daily = daily_digest(s, now=START + timedelta(days=6, hours=3))
    assert len(daily.analytics.runs) == 2
    assert "### Last runs" in daily.markdown
    assert "new failure: `t.py::a`" in daily.markdown
    assert "72.0 → 69.0 %" in daily.markdown
    assert "Backlog (pending or failed): 0" in daily.markdown
    weekly = weekly_digest(s, now=START + timedelta(days=6, hours=3))
    assert len(weekly.analytics.runs) == 3
    assert "### Flaky tests" in weekly.markdown and "### Slowest tests" in weekly.markdown
    assert "### Last runs" not in weekly.markdown
    empty = daily_digest(s, now=START + timedelta(days=60))
    assert empty.analytics.state == "no_data"
    assert "no runs in history for last 1 days" in empty.markdown


def test_runs_minutes_apart_give_no_per_day_trend() -> None:
    """Three runs within an hour: no slope (it would extrapolate), and the note says why."""
    start = datetime(2026, 11, 1, 12, 0)
    series = Series(
        "coverage", "%", [(start + timedelta(minutes=20 * i), 80.0 + i, f"r{i}") for i in range(3)]
    )
    assert series.slope_per_day is None
    assert series.state == "insufficient_data"
    assert "within 40 min" in series.note()
    assert series.change == 2.0  # the plain figures are still there
