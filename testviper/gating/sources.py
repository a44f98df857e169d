"""What the gate judges: a run from history, or a coverage file (JSON or Cobertura XML).

Both become a ``Subject``: coverage per file (with executed and missing lines, for patch
coverage), the tests when known, and the git branch/commit the data belongs to.
Coverage paths are made relative to the project root, after the ``coverage.paths``
aliases (coverage.py's ``[paths]``) have been applied, so a report written on another
machine lines up with this checkout.
"""

import contextlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from testviper.coverage_data import (
    Counts,
    CoverageData,
    FileCoverage,
    from_ranges,
    read_coverage_json,
)
from testviper.errors import UserError


@dataclass(frozen=True)
class TestRow:
    __test__ = False

    nodeid: str
    outcome: str
    duration: float


@dataclass
class Subject:
    kind: str  # "run" or "coverage_file"
    label: str
    coverage: CoverageData | None
    tests: list[TestRow] | None = None
    run: Any = None  # the history row when kind == "run"
    git_branch: str | None = None
    git_commit: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "run_id": self.run.id if self.run is not None else None,
            "path": self.label if self.kind == "coverage_file" else None,
            "git_branch": self.git_branch,
            "git_commit": self.git_commit,
        }


# --- coverage files -------------------------------------------------------------------


def read_coverage_file(path: Path, root: Path, aliases: dict[str, list[str]]) -> CoverageData:
    """A coverage.py JSON report or a Cobertura XML report, paths mapped to ``root``."""
    try:
        head = path.read_bytes()[:512].lstrip()
    except FileNotFoundError:
        raise UserError(f"{path}: no such coverage file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read coverage file ({exc.strerror})") from None
    if not head:
        raise UserError(
            f"{path}: the coverage file is empty; regenerate it with `coverage json` "
            "or `coverage xml`"
        )
    if head.startswith(b"<"):
        data = read_cobertura(path)
    else:
        data = read_coverage_json(path)
        _check_json_format(path)
    return map_paths(data, root, aliases)


def _check_json_format(path: Path) -> None:
    meta = json.loads(path.read_text(encoding="utf-8")).get("meta") or {}
    fmt = meta.get("format")
    if fmt is not None and fmt not in (2, 3):
        raise UserError(
            f"{path}: coverage JSON format {fmt!r} is not supported (formats 2 and 3 are, "
            "from coverage.py 7.x); regenerate it with the installed coverage.py"
        )


def read_cobertura(path: Path) -> CoverageData:
    """Cobertura XML as coverage.py writes it: one ``class`` per file, hits 0/1 per line."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(
            f"{path}: not valid XML ({exc}); the file is truncated or corrupt: "
            "regenerate it with `coverage xml`"
        ) from None
    if root.tag != "coverage":
        raise UserError(f"{path}: not a Cobertura coverage report (root element <{root.tag}>)")
    sources = [s.text.strip() for s in root.iter("source") if s.text and s.text.strip()]
    merged: dict[str, tuple[set[int], set[int], int, int]] = {}
    for cls in root.iter("class"):
        name = cls.get("filename")
        if not name:
            raise UserError(f"{path}: a <class> element has no filename attribute")
        if sources and not os.path.isabs(name):
            name = str(PurePosixPath(sources[0]) / name)
        executed, missing, branches, covered = merged.setdefault(name, (set(), set(), 0, 0))
        for line in cls.iter("line"):
            try:
                number, hits = int(line.get("number", "")), int(line.get("hits", ""))
            except ValueError:
                raise UserError(f"{path}: {name}: a <line> has no valid number/hits") from None
            (executed if hits > 0 else missing).add(number)
            cond = re.match(r"\s*\d+%\s*\((\d+)/(\d+)\)", line.get("condition-coverage") or "")
            if line.get("branch") == "true" and cond:
                covered, branches = covered + int(cond.group(1)), branches + int(cond.group(2))
        merged[name] = (executed, missing - executed, branches, covered)
    files = tuple(
        FileCoverage(
            path=name,
            counts=Counts(len(ex) + len(mi), len(mi), br, cov),
            excluded=0,
            executed_lines=tuple(sorted(ex)),
            missing_lines=tuple(sorted(mi)),
        )
        for name, (ex, mi, br, cov) in sorted(merged.items())
    )
    branch = any(f.counts.branches for f in files) or float(root.get("branch-rate") or 0) > 0
    return CoverageData(files=files, branch=branch)


def _alias_regex(alias: str) -> re.Pattern[str]:
    """An alias prefix (coverage.py [paths] style, ``*`` within one segment) as a regex."""
    out = ""
    for part in re.split(r"(\*\*|\*|\?)", alias.replace("\\", "/").rstrip("/")):
        out += {"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out + r"(?=/|$)")


def map_paths(data: CoverageData, root: Path, aliases: dict[str, list[str]]) -> CoverageData:
    """Apply ``coverage.paths`` aliases, then make paths relative to ``root``."""
    rules = [
        (_alias_regex(alias), entries[0].rstrip("/"))
        for entries in aliases.values()
        for alias in entries[1:]
    ]
    files: dict[str, FileCoverage] = {}
    for f in data.files:
        name = f.path.replace("\\", "/")
        for regex, canonical in rules:
            match = regex.match(name)
            if match:
                name = canonical + name[match.end() :]
                break
        if os.path.isabs(name) or re.match(r"^[A-Za-z]:/", name):
            # Outside the project: kept absolute, so it matches no component.
            with contextlib.suppress(ValueError):
                name = str(Path(name).relative_to(root))
        files[name] = replace(f, path=name)
    return CoverageData(files=tuple(files[k] for k in sorted(files)), branch=data.branch)


# --- history ------------------------------------------------------------------------------


class RangeLines(Sequence[int]):
    """Line numbers stored as ranges ("1-4,9"), expanded on first use.

    Only files touched by a patch (or failing a file rule) need their lines; parsing all
    300 files' ranges up front would be most of the gate's own work.
    """

    __slots__ = ("_lines", "_text")

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: tuple[int, ...] | None = None

    def _all(self) -> tuple[int, ...]:
        if self._lines is None:
            self._lines = tuple(from_ranges(self._text))
        return self._lines

    def __getitem__(self, index: Any) -> Any:
        if index == 0 and self._lines is None and self._text:
            return int(self._text.split(",", 1)[0].split("-", 1)[0])
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __bool__(self) -> bool:
        return bool(self._text)

    def __iter__(self) -> Any:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]


def coverage_from_history(db: Any, run_id: str) -> CoverageData | None:
    """A stored run's coverage, lines included; None when the run has none."""
    rows = db.rows(
        "SELECT path, statements, missing, excluded, branches, covered_branches, "
        "executed_lines, missing_lines FROM file_coverage WHERE run_id = :run ORDER BY path",
        run=run_id,
    )
    if not rows:
        return None
    files = tuple(
        FileCoverage(
            path=r.path,
            counts=Counts(r.statements, r.missing, r.branches, r.covered_branches),
            excluded=r.excluded,
            executed_lines=RangeLines(r.executed_lines),  # type: ignore[arg-type]
            missing_lines=RangeLines(r.missing_lines),  # type: ignore[arg-type]
        )
        for r in rows
    )
    return CoverageData(files=files, branch=any(f.counts.branches for f in files))


def tests_from_history(db: Any, run_id: str) -> list[TestRow]:
    rows = db.rows("SELECT nodeid, outcome, duration FROM tests WHERE run_id = :run", run=run_id)
    return [TestRow(*row) for row in rows]
