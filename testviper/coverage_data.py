"""Read coverage.py's JSON report and total it by file and by component.

Percentages follow coverage.py: (covered lines + covered branches) / (statements +
branches). Totals are sums of counts, never a mean of percentages. Components are
matched with coverage.py's own glob rules, so a component's figure equals what
``coverage report --include=<its globs>`` prints for the same data.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from testviper.errors import UserError
from testviper.fsutil import read_json


@dataclass(frozen=True)
class Counts:
    statements: int = 0
    missing: int = 0
    branches: int = 0
    covered_branches: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(
            self.statements + other.statements,
            self.missing + other.missing,
            self.branches + other.branches,
            self.covered_branches + other.covered_branches,
        )

    @property
    def percent(self) -> float | None:
        """Combined line+branch percentage, or None when nothing is measurable."""
        total = self.statements + self.branches
        if total == 0:
            return None
        covered = self.statements - self.missing + self.covered_branches
        return 100.0 * covered / total


@dataclass(frozen=True)
class FileCoverage:
    path: str
    counts: Counts
    excluded: int
    executed_lines: tuple[int, ...]
    missing_lines: tuple[int, ...]


@dataclass(frozen=True)
class CoverageData:
    files: tuple[FileCoverage, ...]
    branch: bool

    @property
    def totals(self) -> Counts:
        return sum((f.counts for f in self.files), Counts())

    def component(self, matcher: re.Pattern[str], root: Path) -> tuple[int, Counts]:
        """Number of files and summed counts of the files ``matcher`` accepts."""
        picked = [f.counts for f in self.files if matcher.match(str(root / f.path))]
        return len(picked), sum(picked, Counts())


def include_matcher(globs: Sequence[str]) -> re.Pattern[str]:
    """A regex for absolute paths, with coverage.py's ``--include`` glob rules."""
    from coverage.files import globs_to_regex  # imported late: coverage.py loads slowly

    return globs_to_regex(globs)


def read_coverage_json(path: Path) -> CoverageData:
    """Parse a coverage.py JSON report (formats 2 and 3).

    Raises UserError naming the file and what is wrong with it.
    """
    data = read_json(
        path,
        "coverage file",
        "; the file is truncated or corrupt: regenerate it with `coverage json`",
    )
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise UserError(
            f"{path}: not a coverage.py JSON report (no 'files' mapping); "
            "produce it with `coverage json` or `pytest --cov-report=json`"
        )
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise UserError(f"{path}: not a coverage.py JSON report ('meta' is not a mapping)")
    branch = bool(meta.get("branch_coverage"))
    try:
        files = tuple(_file(name, entry) for name, entry in sorted(data["files"].items()))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: malformed file entry in coverage JSON ({exc!r})") from None
    return CoverageData(files=files, branch=branch)


def _file(name: str, entry: dict) -> FileCoverage:
    summary = entry["summary"]
    counts = Counts(
        statements=int(summary["num_statements"]),
        missing=int(summary["missing_lines"]),
        branches=int(summary.get("num_branches", 0)),
        covered_branches=int(summary.get("covered_branches", 0)),
    )
    return FileCoverage(
        path=name,
        counts=counts,
        excluded=int(summary.get("excluded_lines", 0)),
        executed_lines=tuple(int(n) for n in entry["executed_lines"]),
        missing_lines=tuple(int(n) for n in entry["missing_lines"]),
    )


def to_ranges(lines: Iterable[int]) -> str:
    """Compress sorted line numbers: [1, 2, 3, 7] -> "1-3,7"."""
    parts: list[str] = []
    start = prev = None
    for n in sorted(lines):
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = n
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)


def from_ranges(text: str) -> list[int]:
    """Inverse of ``to_ranges``."""
    lines: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        lines.extend(range(int(low), int(high or low) + 1))
    return lines
