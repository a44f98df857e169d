"""What the gate decides: one result per rule, and the verdict over all of them."""

from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("fail", "warn", "info", "pass")
# Most important first: the order of the text summary and of GitHub annotations.
RANK = {name: i for i, name in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class RuleResult:
    """One rule's outcome.

    ``rule`` is a stable id (``coverage.overall``, ``coverage.component.api``,
    ``patch.uncovered``...), ``key`` the config key that sets it, ``message`` says what,
    by how much and where. ``file``/``line``/``end_line`` point at code when they can.
    """

    rule: str
    key: str
    severity: str
    message: str
    file: str | None = None
    line: int | None = None
    end_line: int | None = None
    value: float | None = None
    threshold: float | None = None
    priority: int = 50  # lower comes first among results of the same severity

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "key": self.key,
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "end_line": self.end_line,
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass
class Verdict:
    results: list[RuleResult] = field(default_factory=list)
    subject: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    coverage: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, *results: RuleResult) -> None:
        self.results.extend(results)

    def ordered(self) -> list[RuleResult]:
        return sorted(self.results, key=lambda r: (RANK[r.severity], r.priority))

    def count(self, severity: str) -> int:
        return sum(1 for r in self.results if r.severity == severity)

    @property
    def status(self) -> str:
        """fail if any rule failed, warn if any warned, else pass."""
        if self.count("fail"):
            return "fail"
        return "warn" if self.count("warn") else "pass"

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "fail" else 0


def level_severity(value: float, fail_under: float | None, warn_under: float | None) -> str:
    """fail/warn/pass for a percentage against its two levels (unset levels never trigger)."""
    if fail_under is not None and value < fail_under:
        return "fail"
    if warn_under is not None and value < warn_under:
        return "warn"
    return "pass"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"
