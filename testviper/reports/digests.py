"""Digests for the scheduled routines: one function per period.

Each returns ``Digest(analytics, markdown, html)``:

- ``daily_digest``: the last day: last runs, regressions and new failures, delivery backlog;
- ``weekly_digest``: the last 7 days: coverage trends, flaky and slowest tests;
- ``monthly_digest``: the last 30 days: threshold suggestions from the trends (a component
  that stayed well above its ``fail_under`` for the window) and run-duration growth.
"""

import math
from datetime import datetime
from typing import Any, NamedTuple

from testviper.analytics.core import Analytics, analyse, make_window
from testviper.config import Settings
from testviper.reports import render

# Suggest a threshold only from a trend this long, with this many runs.
MIN_SPAN_DAYS = 7
MIN_POINTS = 5
# The suggested fail_under: the window's minimum less this margin, down to a multiple of 5.
MARGIN = 3.0
STEP = 5


class Digest(NamedTuple):
    analytics: Analytics
    markdown: str
    html: str


def threshold_suggestions(settings: Settings, a: Analytics) -> list[str]:
    """ "xradio has stayed >= 78 % for 30 days: raise its threshold from 70 to 75"."""
    out = []
    for name, comp in a.components.items():
        s = comp.series
        if s.n < MIN_POINTS or s.span_days < MIN_SPAN_DAYS or s.minimum is None:
            continue
        floor = s.minimum
        suggested = math.floor((floor - MARGIN) / STEP) * STEP
        days = round(s.span_days)
        current = comp.fail_under
        if suggested <= 0:
            continue
        if current is None:
            out.append(
                f"{name} has stayed ≥ {math.floor(floor):g} % for {days} days and has no "
                f"threshold: set fail_under {suggested}"
            )
        elif suggested > current:
            out.append(
                f"{name} has stayed ≥ {math.floor(floor):g} % for {days} days: raise its "
                f"threshold from {current:g} to {suggested}"
            )
    return out


def duration_growth(a: Analytics) -> str | None:
    s = a.durations
    if s.state != "ok":
        return s.note() if a.runs else None
    start, end = s.first or 0.0, s.latest or 0.0
    growth = (s.slope_per_day or 0.0) * 30
    relative = f" ({100 * (end - start) / start:+.0f} %)" if start else ""
    return (
        f"runs took {start:.1f} s at the start of the window and {end:.1f} s at the end"
        f"{relative}; the fitted trend is {growth:+.1f} s per 30 days "
        f"(median {s.median:.1f} s)"
    )


def _digest(
    settings: Settings, period: str, days: int, branch: str | None, now: datetime | None, db: Any
) -> Digest:
    a = analyse(settings, make_window(days=days, now=now), branch, db=db)
    suggestions = threshold_suggestions(settings, a) if period == "monthly" else None
    growth = duration_growth(a) if period == "monthly" else None
    return Digest(
        a,
        render.markdown(a, period, suggestions, growth),
        render.html(a, period, suggestions, growth),
    )


def daily_digest(
    settings: Settings, branch: str | None = None, now: datetime | None = None, db: Any = None
) -> Digest:
    return _digest(settings, "daily", 1, branch, now, db)


def weekly_digest(
    settings: Settings, branch: str | None = None, now: datetime | None = None, db: Any = None
) -> Digest:
    return _digest(settings, "weekly", 7, branch, now, db)


def monthly_digest(
    settings: Settings, branch: str | None = None, now: datetime | None = None, db: Any = None
) -> Digest:
    return _digest(settings, "monthly", 30, branch, now, db)
