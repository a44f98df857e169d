"""The four JSON reports, keyed as the old tool's so its readers still find their way.

See the package docstring (``testviper.reports``) for the schemas.
"""

from typing import Any

from testviper.analytics.core import Analytics, ComponentStatus
from testviper.analytics.stats import Series

SCHEMA_VERSION = 1
# A trend is "improving"/"declining" when the fitted line moves more than this per day.
TREND_PP_PER_DAY = 0.1


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def trend_word(series: Series) -> str:
    slope = series.slope_per_day
    if slope is None:
        return "insufficient_data"
    if slope > TREND_PP_PER_DAY:
        return "improving"
    if slope < -TREND_PP_PER_DAY:
        return "declining"
    return "stable"


def stability(series: Series) -> str:
    """From the MAD (pp): below 0.5 very_stable, 1 stable, 3 variable, else highly_variable."""
    if series.n < 3 or series.mad is None:
        return "insufficient_data"
    for limit, word in ((0.5, "very_stable"), (1.0, "stable"), (3.0, "variable")):
        if series.mad < limit:
            return word
    return "highly_variable"


def _metadata(a: Analytics) -> dict[str, Any]:
    return {
        "generated_at": a.generated_at.isoformat() + "Z",
        "project": a.project,
        "branch": a.branch,
        "window": a.window.as_dict(),
        "data_state": a.state,
        "data_note": a.state_note or None,
        "latest_run_id": a.latest.id if a.latest else None,
    }


def _component_summary(name: str, series: Series) -> dict[str, Any]:
    return {
        "display_name": name,
        "launches": series.n,
        "avg_coverage": _r(series.median),  # the median: robust to one odd run
        "median_coverage": _r(series.median),
        "mad": _r(series.mad),
        "max_coverage": _r(series.maximum),
        "min_coverage": _r(series.minimum),
        "first_coverage": _r(series.first),
        "last_coverage": _r(series.latest),
        "change": _r(series.change),
        "slope_per_day": _r(series.slope_per_day, 4),
        "trend": trend_word(series),
        "coverage_stability": stability(series),
    }


def coverage_analytics(a: Analytics) -> dict[str, Any]:
    first, last = (a.runs[0], a.runs[-1]) if a.runs else (None, None)
    insights, recommendations = [], []
    for name, comp in a.components.items():
        word = trend_word(comp.series)
        if word in ("improving", "declining"):
            insights.append(
                f"{name} is {word}: {comp.series.slope_per_day:+.2f} pp/day over the window"
            )
        if comp.status in ("fail", "warn"):
            recommendations.append(f"{name}: {comp.message}")
    if a.state_note:
        insights.insert(0, a.state_note)
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": {
            **_metadata(a),
            "analysis_period": a.window.label,
            "total_launches_analyzed": len(a.runs),
            "report_version": "2",
        },
        "summary": {
            "total_launches": len(a.runs),
            "date_range": (
                f"{first.started_at:%Y-%m-%d %H:%M} to {last.started_at:%Y-%m-%d %H:%M} UTC"
                if first and last
                else None
            ),
            "overall": _component_summary("overall", a.coverage),
            "components": {
                name: _component_summary(name, comp.series) for name, comp in a.components.items()
            },
        },
        "trends": {
            "overall": a.coverage.as_dict()["series"] if a.runs else [],
            **{name: comp.series.as_dict()["series"] for name, comp in a.components.items()},
        },
        "insights": insights,
        "recommendations": recommendations,
    }


ACTION = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "info": "NO_THRESHOLD"}


def _threshold_entry(comp: ComponentStatus) -> dict[str, Any]:
    coverage = comp.series.latest
    limit = comp.fail_under
    return {
        "component": comp.name,
        "coverage": _r(coverage),
        "threshold": comp.fail_under,
        "warn_threshold": comp.warn_under,
        "threshold_met": None if limit is None or coverage is None else coverage >= limit,
        "action": ACTION.get(comp.status, "NO_THRESHOLD"),
        "gap": _r(coverage - limit) if limit is not None and coverage is not None else None,
        "files": comp.files,
        "total_statements": comp.statements,
        "missing_lines": comp.missing,
        "message": comp.message,
    }


def threshold(a: Analytics) -> dict[str, Any]:
    overall = a.overall_threshold
    comps = {
        name: _threshold_entry(c)
        for name, c in a.components.items()
        if c.series.latest is not None or c.fail_under is not None
    }
    actions = [c["action"] for c in comps.values()]
    if overall is not None:
        actions.append(ACTION.get(overall.status, "NO_THRESHOLD"))
    result = (
        "NO_DATA"
        if not a.runs or a.coverage.latest is None
        else "FAIL"
        if "FAIL" in actions
        else "WARN"
        if "WARN" in actions
        else "PASS"
    )
    latest = a.coverage.latest
    limit = overall.fail_under if overall else None
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(a),
        "run_id": a.latest.id if a.latest else None,
        "overall_result": result,
        "overall_coverage": _r(latest),
        "overall_threshold": limit,
        "overall_meets_threshold": (None if latest is None or limit is None else latest >= limit),
        "overall_message": overall.message if overall else a.state_note,
        "components": comps,
        "summary": {
            "total_components": len(comps),
            "passing": actions.count("PASS"),
            "warnings": actions.count("WARN"),
            "failing": actions.count("FAIL"),
            "no_threshold": actions.count("NO_THRESHOLD"),
        },
        "timestamp": a.generated_at.isoformat() + "Z",
    }


def _drop_severity(drop: float) -> str:
    return "major" if drop >= 5 else "moderate" if drop >= 2 else "minor"


def regressions(a: Analytics, max_drop: float = 0.5) -> list[dict[str, Any]]:
    """Immediate drops (newest vs the run before) and declining trends, per component."""
    found = []
    named = {"overall": a.coverage, **{n: c.series for n, c in a.components.items()}}
    for name, series in named.items():
        if series.n >= 2:
            current, previous = series.points[-1][1], series.points[-2][1]
            drop = previous - current
            if drop > max_drop:
                found.append(
                    {
                        "type": "immediate",
                        "component": name,
                        "severity": _drop_severity(drop),
                        "current_coverage": _r(current),
                        "previous_coverage": _r(previous),
                        "coverage_drop": _r(drop),
                        "drop_percentage": _r(100 * drop / previous) if previous else None,
                        "run_id": series.points[-1][2],
                        "previous_run_id": series.points[-2][2],
                    }
                )
        slope = series.slope_per_day
        if series.n >= 3 and slope is not None and slope < -TREND_PP_PER_DAY:
            found.append(
                {
                    "type": "trend",
                    "component": name,
                    "severity": "moderate" if slope <= -0.5 else "minor",
                    "trend_slope": _r(slope, 4),
                    "median_coverage": _r(series.median),
                    "latest_coverage": _r(series.latest),
                    "coverage_drop": _r(-(series.change or 0.0)),
                    "mad": _r(series.mad),
                    "points_analyzed": series.n,
                    "days_analyzed": _r(series.span_days),
                }
            )
    return found


def _trend(series: Series) -> dict[str, Any]:
    if series.slope_per_day is None:
        return {"has_trend": False, "reason": "insufficient_data", "points": series.n}
    return {
        "has_trend": True,
        "trend_direction": trend_word(series),
        "slope": _r(series.slope_per_day, 4),
        "median_coverage": _r(series.median),
        "mad": _r(series.mad),
        "min_coverage": _r(series.minimum),
        "max_coverage": _r(series.maximum),
        "latest_coverage": _r(series.latest),
        "coverage_range": _r((series.maximum or 0) - (series.minimum or 0)),
        "points": series.n,
    }


def regression(a: Analytics, max_drop: float = 0.5) -> dict[str, Any]:
    found = regressions(a, max_drop)
    severities = [r["severity"] for r in found]
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(a),
        "detection_date": a.generated_at.isoformat() + "Z",
        "days_analyzed": _r(a.coverage.span_days),
        "runs_analyzed": len(a.runs),
        "components_analyzed": len(a.components),
        "regressions": found,
        "summary": {
            "total": len(found),
            "major": severities.count("major"),
            "moderate": severities.count("moderate"),
            "minor": severities.count("minor"),
        },
        "component_trends": {
            "overall": _trend(a.coverage),
            **{n: _trend(c.series) for n, c in a.components.items()},
        },
        "current_coverage": {
            n: _r(c.series.latest) for n, c in a.components.items() if c.series.latest is not None
        },
        "new_failures": a.new_failures,
        "new_failures_note": a.new_failures_note,
    }


def analytics_summary(a: Analytics) -> dict[str, Any]:
    latest = a.latest
    concerns = []
    for p in a.new_failures:
        concerns.append({"type": "new_failure", "description": p, "priority": "high"})
    for p in a.flaky:
        concerns.append({"type": "flaky_test", "description": p.detail, "priority": "medium"})
    for p in a.slower:
        concerns.append({"type": "slower_test", "description": p.detail, "priority": "medium"})
    for name, comp in a.components.items():
        if comp.status in ("fail", "warn"):
            concerns.append(
                {
                    "type": "critical" if comp.status == "fail" else "warning",
                    "description": f"{name}: {comp.message}",
                    "priority": "high" if comp.status == "fail" else "medium",
                }
            )
    recommendations = []
    if a.state_note:
        recommendations.append(a.state_note)
    if a.delivery_backlog:
        recommendations.append(
            f"{a.delivery_backlog} ReportPortal deliveries are pending or failed: run `inv sync`"
        )
    if a.flaky:
        recommendations.append(f"{len(a.flaky)} flaky tests: fix or quarantine them")
    return {
        "schema_version": SCHEMA_VERSION,
        "report_info": {
            **_metadata(a),
            "report_type": "analytics_summary",
            "purpose": "test and coverage health of the window, from the TestViper history",
        },
        "delivery_status": {"in_window": a.deliveries, "backlog": a.delivery_backlog},
        "key_insights": {
            "total_tests_analyzed": latest.counts["tests_total"] if latest else None,
            "critical_issues": (len(a.failures) if latest else None),
            "new_failures": len(a.new_failures) if latest else None,
            "warnings": sum(1 for c in a.components.values() if c.status == "warn"),
            "flaky_tests_detected": len(a.flaky) if latest else None,
            "slower_tests_detected": len(a.slower) if latest else None,
        },
        "latest_run_summary": latest.as_dict() if latest else None,
        "runs": [r.as_dict() for r in a.runs],
        "coverage": a.coverage.as_dict(with_points=False),
        "pass_rate": a.pass_rate.as_dict(with_points=False),
        "tests_total": a.tests_total.as_dict(with_points=False),
        "run_durations": a.durations.as_dict(with_points=False),
        "slowest_tests": [
            {
                "nodeid": t.nodeid,
                "latest_duration": round(t.latest, 4),
                "outcome": t.outcome,
                **{
                    k: v
                    for k, v in t.series.as_dict(with_points=False).items()
                    if k in ("median", "mad", "slope_per_day", "points", "state")
                },
            }
            for t in a.slowest
        ],
        "flaky_tests": [{"nodeid": p.nodeid, "detail": p.detail} for p in a.flaky],
        "slower_tests": [{"nodeid": p.nodeid, "detail": p.detail} for p in a.slower],
        "failures": [{"nodeid": p.nodeid, "message": p.detail} for p in a.failures],
        "profiles": a.profiles,
        "top_concerns": concerns,
        "recommendations": recommendations,
    }
