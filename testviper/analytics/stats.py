"""Small statistics for trends: least-squares slope, median, MAD, and a series summary.

A series with fewer than two points (or all at the same instant) has no slope: its
``state`` says ``insufficient_data`` (one point) or ``no_data`` (none) and the figures
that cannot be computed are ``None``, never 0.
"""

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DAY = 86400.0


def slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Ordinary least-squares slope of y over x; None without two distinct x values."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return sxy / sxx


def mad(values: Sequence[float]) -> float | None:
    """Median absolute deviation from the median (unscaled); None for no values."""
    if not values:
        return None
    centre = statistics.median(values)
    return statistics.median(abs(v - centre) for v in values)


MIN_TREND_DAYS = 1.0


@dataclass
class Series:
    """A value over time (coverage %, run duration s, pass rate %) within a window.

    ``slope_per_day`` is the least-squares slope with x = days since ``origin`` taken
    from each point's time, so runs bunched on one day do not weigh as days.
    """

    name: str
    unit: str
    points: list[tuple[datetime, float, str]] = field(default_factory=list)  # time, value, run
    origin: datetime | None = None

    @property
    def n(self) -> int:
        return len(self.points)

    @property
    def values(self) -> list[float]:
        return [v for _, v, _ in self.points]

    @property
    def state(self) -> str:
        if not self.points:
            return "no_data"
        return "ok" if self.slope_per_day is not None else "insufficient_data"

    @property
    def slope_per_day(self) -> float | None:
        # Runs minutes apart would extrapolate to absurd rates per day: no trend then.
        if not self.points or self.span_days < MIN_TREND_DAYS:
            return None
        origin = self.origin or self.points[0][0]
        return slope([((t - origin).total_seconds() / DAY, v) for t, v, _ in self.points])

    @property
    def first(self) -> float | None:
        return self.points[0][1] if self.points else None

    @property
    def latest(self) -> float | None:
        return self.points[-1][1] if self.points else None

    @property
    def change(self) -> float | None:
        """Latest minus the first value in the window (None below two points)."""
        return self.points[-1][1] - self.points[0][1] if self.n >= 2 else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.points else None

    @property
    def mad(self) -> float | None:
        return mad(self.values) if self.n >= 2 else None

    @property
    def minimum(self) -> float | None:
        return min(self.values) if self.points else None

    @property
    def maximum(self) -> float | None:
        return max(self.values) if self.points else None

    @property
    def span_days(self) -> float:
        if self.n < 2:
            return 0.0
        return (self.points[-1][0] - self.points[0][0]).total_seconds() / DAY

    def note(self) -> str:
        """Why figures are missing, in words for the reports ('' when there is a trend)."""
        if self.state == "no_data":
            return f"no {self.name} data in the window"
        if self.state == "insufficient_data" and self.n < 2:
            return f"insufficient data: {self.n} point(s) of {self.name}, a trend needs two"
        if self.state == "insufficient_data":
            hours = self.span_days * 24
            within = f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"
            return (
                f"insufficient data: {self.n} points of {self.name} within {within}; "
                "a per-day trend needs at least a day of runs"
            )
        return ""

    def as_dict(self, with_points: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "state": self.state,
            "unit": self.unit,
            "points": self.n,
            "first": _round(self.first),
            "latest": _round(self.latest),
            "change": _round(self.change),
            "slope_per_day": _round(self.slope_per_day, 4),
            "median": _round(self.median),
            "mad": _round(self.mad),
            "min": _round(self.minimum),
            "max": _round(self.maximum),
        }
        if self.state != "ok":
            out["note"] = self.note()
        if with_points:
            out["series"] = [
                {"time": t.isoformat() + "Z", "value": _round(v), "run_id": run}
                for t, v, run in self.points
            ]
        return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
