"""Write the report files atomically, with names that never collide."""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from testviper.analytics.core import Analytics
from testviper.config import Settings
from testviper.fsutil import atomic_write
from testviper.reports import json_reports, render
from testviper.reports.badge import badge_svg

FORMATS = ("all", "json", "html", "md", "badge")
JSON_NAMES = {
    "tv_coverage_analytics_report": json_reports.coverage_analytics,
    "tv_threshold_report": json_reports.threshold,
    "tv_regression_report": None,  # needs the configured max_drop
    "tv_analytics_report": json_reports.analytics_summary,
}
BADGE = "coverage-badge.svg"


@dataclass
class Written:
    directory: Path
    files: list[Path] = field(default_factory=list)


def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def report_tag(a: Analytics, directory: Path, now: datetime | None = None) -> str:
    """The newest run's id; a full timestamp is added when that was used before.

    Without a run (empty window) the timestamp alone; a counter guards against two
    reports in the same microsecond.
    """
    stamp = _stamp(now or datetime.now(UTC))
    base = a.latest.id if a.latest is not None else None
    candidates = [base] if base else []
    candidates.append(f"{base}_{stamp}" if base else stamp)
    for tag in candidates:
        if not any(directory.glob(f"tv_*_{tag}.*")):
            return tag
    n = 1
    while any(directory.glob(f"tv_*_{candidates[-1]}-{n}.*")):
        n += 1
    return f"{candidates[-1]}-{n}"


def write_reports(settings: Settings, a: Analytics, directory: Path, fmt: str = "all") -> Written:
    if fmt not in FORMATS:
        from testviper.errors import UserError

        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    directory.mkdir(parents=True, exist_ok=True)
    tag = report_tag(a, directory)
    out = Written(directory)

    def put(name: str, text: str) -> None:
        path = directory / name
        atomic_write(path, text)
        out.files.append(path)

    if fmt in ("all", "json"):
        for stem, build in JSON_NAMES.items():
            if build is None:
                data = json_reports.regression(a, settings.config.gate.regression.max_drop)
            else:
                data = build(a)
            put(f"{stem}_{tag}.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if fmt in ("all", "md"):
        put(f"tv_digest_{tag}.md", render.markdown(a))
    if fmt in ("all", "html"):
        put(f"tv_report_{tag}.html", render.html(a))
    if fmt in ("all", "badge"):
        put(BADGE, badge_svg(a.coverage.latest, settings.config.reports.badge_bands))
    return out
