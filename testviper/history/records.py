"""What history stores about a run, as plain dataclasses (no database imports)."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from testviper.coverage_data import Counts, FileCoverage
from testviper.errors import UserError

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass
class TestResult:
    """One test's final result, as the journal recorded it."""

    __test__ = False  # not a pytest test class, despite the name

    nodeid: str
    outcome: str
    phase: str
    duration: float
    message: str | None = None
    log: str | None = None
    markers: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    worker: str | None = None
    reruns: int = 0  # earlier attempts (pytest-rerunfailures); the fields are the last's


@dataclass
class RunRecord:
    """Everything history keeps about one run."""

    id: str
    project: str
    status: str
    started_at: datetime
    command: list[str]
    run_dir: str
    exit_code: int | None = None
    finished_at: datetime | None = None
    label: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    tests: list[TestResult] = field(default_factory=list)
    files: list[FileCoverage] = field(default_factory=list)
    components: dict[str, tuple[int, Counts]] = field(default_factory=dict)
    coverage: Counts | None = None

    def counts(self) -> dict[str, int]:
        tally = dict.fromkeys(OUTCOMES, 0)
        for test in self.tests:
            tally[test.outcome] += 1
        return tally


def only_run(rows: list[Any], id_prefix: str) -> Any:
    """The one run that matched ``id_prefix`` (at most two rows are fetched to tell)."""
    if not rows:
        raise UserError(f"no run matches '{id_prefix}'; `inv runs` lists the recent ones")
    if len(rows) > 1:
        raise UserError(f"'{id_prefix}' matches several runs; give more characters of the id")
    return rows[0]
