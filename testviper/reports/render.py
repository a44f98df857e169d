"""Markdown digest and self-contained HTML page for one ``Analytics``.

``period`` picks the sections: ``report`` (everything), ``daily`` (last runs,
regressions, delivery backlog), ``weekly`` (trends, flaky, slow), ``monthly``
(threshold suggestions, duration growth, trends). Charts are inline SVG computed here;
the page needs no JavaScript and loads nothing from anywhere.
"""

from datetime import datetime
from typing import Any

from testviper.analytics.core import Analytics
from testviper.analytics.stats import Series
from testviper.reports.json_reports import regressions, trend_word

SECTIONS = {
    "report": {"runs", "coverage", "components", "regressions", "tests", "deliveries", "profiles"},
    "daily": {"runs", "regressions", "deliveries"},
    "weekly": {"coverage", "components", "tests", "regressions"},
    "monthly": {"suggestions", "coverage", "components", "growth"},
}
TITLES = {
    "report": "Test and coverage report",
    "daily": "Daily digest",
    "weekly": "Weekly digest",
    "monthly": "Monthly digest",
}
SEVERITY_WORD = {"pass": "pass", "warn": "WARN", "fail": "FAIL", "info": "—"}


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{' ' + unit if unit else ''}"


def signed(value: float | None, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}{' ' + unit if unit else ''}"


def trend_text(series: Series, unit: str) -> str:
    if series.state != "ok":
        return series.note()
    diff = "pp" if unit == "%" else unit  # differences of percentages are points
    return (
        f"latest {fmt(series.latest, unit)}, {signed(series.change, diff)} since window start, "
        f"slope {signed(series.slope_per_day, diff + '/day', 3)}, "
        f"median {fmt(series.median, unit)} (MAD {fmt(series.mad, diff)})"
    )


# --- Markdown -----------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """Safe inside a Markdown table cell: no HTML, no pipes, one line."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("`", "'")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def markdown(
    a: Analytics,
    period: str = "report",
    suggestions: list[str] | None = None,
    growth: str | None = None,
) -> str:
    show = SECTIONS[period]
    lines = [f"## {TITLES[period]}: {md_escape(a.project)}", ""]
    branch = f"branch `{md_escape(a.branch)}`" if a.branch else "all branches"
    lines.append(f"{a.window.label}, {branch}, {len(a.runs)} runs.")
    lines.append("")
    if a.state_note:
        lines += [f"**{md_escape(a.state_note)}**", ""]
    latest = a.latest
    if latest is not None:
        lines.append(
            f"Latest run `{latest.id}` ({latest.started_at:%Y-%m-%d %H:%M} UTC, {latest.status}): "
            f"{latest.counts['passed']} passed, {latest.counts['failed']} failed, "
            f"{latest.counts['errors']} errors, {latest.counts['skipped']} skipped; "
            f"coverage {fmt(latest.cov_percent, '%')}."
        )
        lines.append("")
    if "suggestions" in show:
        lines.append("### Threshold suggestions")
        lines += [f"- {md_escape(s)}" for s in suggestions or []] or ["- none"]
        lines.append("")
    if "growth" in show and growth:
        lines += ["### Run duration", "", md_escape(growth), ""]
    if "runs" in show and a.runs:
        lines += [
            "### Last runs",
            "",
            "| run | started (UTC) | status | passed | failed | coverage | duration |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in a.runs[::-1][:10]:
            lines.append(
                f"| `{r.id[:13]}` | {r.started_at:%Y-%m-%d %H:%M} | {r.status} | "
                f"{r.counts['passed']} | {r.counts['failed'] + r.counts['errors']} | "
                f"{fmt(r.cov_percent, '%')} | {fmt(r.duration, 's', 1)} |"
            )
        lines.append("")
    if "coverage" in show:
        lines += ["### Coverage", "", f"- overall: {md_escape(trend_text(a.coverage, '%'))}"]
        for name, comp in a.components.items():
            lines.append(f"- {md_escape(name)}: {md_escape(trend_text(comp.series, '%'))}")
        lines.append(f"- run duration: {md_escape(trend_text(a.durations, 's'))}")
        lines.append(f"- pass rate: {md_escape(trend_text(a.pass_rate, '%'))}")
        lines.append("")
    if "components" in show and a.components:
        lines += [
            "### Components",
            "",
            "| component | coverage | trend | fail_under | status |",
            "|---|---:|---|---:|---|",
        ]
        for name, comp in a.components.items():
            lines.append(
                f"| {md_escape(name)} | {fmt(comp.series.latest, '%')} | "
                f"{trend_word(comp.series)} | {fmt(comp.fail_under, '', 0)} | "
                f"{SEVERITY_WORD.get(comp.status, comp.status)} |"
            )
        lines.append("")
    if "regressions" in show:
        found = regressions(a)
        lines.append("### Regressions")
        lines.append("")
        if not a.runs:
            lines.append("- no runs: nothing to compare")
        for reg in found:
            if reg["type"] == "immediate":
                lines.append(
                    f"- {md_escape(reg['component'])}: coverage "
                    f"{reg['previous_coverage']} → {reg['current_coverage']} % "
                    f"(-{reg['coverage_drop']} pp, {reg['severity']})"
                )
            else:
                lines.append(
                    f"- {md_escape(reg['component'])}: declining "
                    f"{reg['trend_slope']:+.3f} pp/day over {reg['points_analyzed']} runs"
                )
        for nodeid in a.new_failures:
            lines.append(f"- new failure: `{md_escape(nodeid)}`")
        if a.runs and not found and not a.new_failures:
            lines.append(f"- none ({md_escape(a.new_failures_note)})")
        lines.append("")
    if "tests" in show:
        lines += ["### Flaky tests", ""]
        lines += [f"- `{md_escape(p.nodeid)}`: {md_escape(p.detail)}" for p in a.flaky] or [
            f"- none{': ' + md_escape(a.flaky_note) if a.flaky_note else ''}"
        ]
        lines += ["", "### Slowest tests", ""]
        if a.slowest:
            lines += ["| test | latest | median | slope |", "|---|---:|---:|---:|"]
            for t in a.slowest:
                lines.append(
                    f"| `{md_escape(t.nodeid)}` | {fmt(t.latest, 's', 3)} | "
                    f"{fmt(t.series.median, 's', 3)} | "
                    f"{signed(t.series.slope_per_day, 's/day', 4)} |"
                )
        else:
            lines.append("- no test results")
        for p in a.slower:
            lines.append(f"- slower than usual: {md_escape(p.detail)}")
        lines.append("")
    if "deliveries" in show:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(a.deliveries.items())) or "none"
        lines += [
            "### ReportPortal deliveries",
            "",
            f"In the window: {counts}. Backlog (pending or failed): {a.delivery_backlog}.",
            "",
        ]
    if "profiles" in show and a.profiles:
        lines += ["### Profiles", "", "| target | runs | latest wall | median wall |"]
        lines.append("|---|---:|---:|---:|")
        for p in a.profiles:
            lines.append(
                f"| {md_escape(p['target'])} | {p['samples']} | {p['latest_wall']} s | "
                f"{p['median_wall']} s |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# --- HTML -------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]


def line_chart(
    title: str, series: list[Series], unit: str, width: int = 640, height: int = 220
) -> dict[str, Any]:
    """Polylines in a viewBox, axes and labels: everything the template draws."""
    left, right, top, bottom = 64, 12, 12, 28
    plotted = [s for s in series if s.points]
    chart: dict[str, Any] = {
        "title": title,
        "width": width,
        "height": height,
        "lines": [],
        "ticks": [],
        "x_labels": [],
        "empty": not plotted,
        "note": "" if plotted else "no data in the window",
    }
    if not plotted:
        return chart
    times = [t for s in plotted for t, _, _ in s.points]
    values = [v for s in plotted for v in s.values]
    t0, t1 = min(times), max(times)
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    if unit == "%":  # a percentage axis never shows values outside 0..100
        lo, hi = max(lo, 0.0), min(hi, 100.0)
    digits = 0 if hi - lo >= 20 else 1 if hi - lo >= 2 else 2 if hi - lo >= 0.2 else 3
    span = (t1 - t0).total_seconds() or 1.0
    pw, ph = width - left - right, height - top - bottom

    def x_of(t: datetime) -> float:
        return left + pw * ((t - t0).total_seconds() / span if t1 > t0 else 0.5)

    def y_of(v: float) -> float:
        return top + ph * (1 - (v - lo) / (hi - lo))

    for i, s in enumerate(plotted):
        coords = [(round(x_of(t), 1), round(y_of(v), 1)) for t, v, _ in s.points]
        chart["lines"].append(
            {
                "label": s.name,
                "colour": PALETTE[i % len(PALETTE)],
                "points": " ".join(f"{x},{y}" for x, y in coords),
                "dots": coords if len(coords) <= 60 else [],
            }
        )
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        chart["ticks"].append({"y": round(y_of(v), 1), "label": f"{v:.{digits}f}{unit}"})
    chart["x_labels"] = [
        {"x": left, "anchor": "start", "label": f"{t0:%Y-%m-%d}"},
        {"x": width - right, "anchor": "end", "label": f"{t1:%Y-%m-%d}"},
    ]
    chart["left"], chart["right_x"], chart["bottom_y"] = left, width - right, height - bottom
    chart["note"] = "; ".join(s.note() for s in plotted if s.note())
    return chart


def html(
    a: Analytics,
    period: str = "report",
    suggestions: list[str] | None = None,
    growth: str | None = None,
) -> str:
    from importlib.resources import files

    import jinja2

    source = files("testviper.templates").joinpath("report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(source)
    comps = list(a.components.values())
    charts = [
        line_chart(
            "Coverage (%)", [a.coverage, *[c.series for c in comps][: len(PALETTE) - 1]], "%"
        ),
        line_chart("Run duration (s)", [a.durations], "s"),
        line_chart("Pass rate (%)", [a.pass_rate], "%"),
    ]
    return template.render(
        a=a,
        title=TITLES[period],
        show=SECTIONS[period],
        charts=charts,
        fmt=fmt,
        signed=signed,
        trend_word=trend_word,
        trend_text=trend_text,
        severity_word=SEVERITY_WORD,
        regressions=regressions(a),
        suggestions=suggestions or [],
        growth=growth,
        runs_desc=a.runs[::-1][:20],
        generated=f"{a.generated_at:%Y-%m-%d %H:%M:%S} UTC",
    )
