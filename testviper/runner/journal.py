"""Read a run journal written by the plugin, tolerating a torn or corrupt line."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testviper.history.records import OUTCOMES, TestResult


@dataclass
class Journal:
    start: dict[str, Any] | None = None
    finish: dict[str, Any] | None = None
    tests: list[TestResult] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.finish is not None


def read_journal(path: Path) -> Journal:
    """Parse ``path``; a bad line is skipped with a warning, the rest is kept."""
    journal = Journal()
    if not path.exists():
        journal.warnings.append(f"{path}: no journal; pytest did not start or was killed early")
        return journal
    started: dict[str, None] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                kind = event["event"]
                if kind == "test":
                    journal.tests.append(_test(event))
                    started.pop(event["nodeid"], None)
                elif kind == "test_start":
                    started[event["nodeid"]] = None
                elif kind == "session_start":
                    journal.start = event
                elif kind == "session_finish":
                    journal.finish = event
            except (ValueError, KeyError, TypeError) as exc:
                reason = "torn last line" if not line.endswith("\n") else type(exc).__name__
                journal.warnings.append(f"{path}:{number}: skipped a corrupt line ({reason})")
    journal.in_flight = list(started)
    return journal


def _test(event: dict[str, Any]) -> TestResult:
    outcome = event["outcome"]
    if outcome not in OUTCOMES:
        raise ValueError(outcome)
    return TestResult(
        nodeid=str(event["nodeid"]),
        outcome=outcome,
        phase=str(event.get("when") or "call"),
        duration=float(event.get("duration") or 0.0),
        message=event.get("longrepr"),
        log=event.get("log"),
        markers=list(event.get("markers") or []),
        params=dict(event.get("params") or {}),
        worker=event.get("worker"),
        reruns=int(event.get("reruns") or 0),
    )
