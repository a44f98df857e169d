"""Read a run journal written by the plugin, tolerating a torn or corrupt line.

``inv run`` reads the journal while pytest is still appending to it (``JournalReader.follow``),
so that after pytest exits only the last few lines are left to parse.
"""

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testviper.history.records import OUTCOMES, TestResult

FOLLOW_INTERVAL = 0.2  # seconds between reads of a growing journal


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


def parse_event(line: bytes | str) -> dict[str, Any] | None:
    """One journal line's event; None for a torn or corrupt line (ingest warns of those)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def iter_events(journal: Path) -> Iterator[dict[str, Any]]:
    """The journal's events, one at a time: a large journal is never held in memory."""
    with journal.open("rb") as handle:
        for line in handle:
            if (event := parse_event(line)) is not None:
                yield event


def read_journal(path: Path) -> Journal:
    """Parse ``path``; a bad line is skipped with a warning, the rest is kept."""
    return JournalReader(path).finish()


class JournalReader:
    """Parses a journal in pieces, as the plugin appends to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = Journal()
        self._offset = 0  # bytes parsed so far: always the end of a whole line
        self._number = 0  # lines parsed so far
        self._started: dict[str, None] = {}  # tests started and not (yet) finished

    def read(self, final: bool = False) -> None:
        """Parse the lines added since the last read.

        A line without its newline may still be being written, so it waits for the next
        read unless ``final`` (pytest has exited: it is a torn last line).
        """
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:  # the plugin has not created it yet
            return
        if not final:
            data = data[: data.rfind(b"\n") + 1]
        for line in data.splitlines(keepends=True):
            self._parse(line)
            self._offset += len(line)

    def follow(self, interval: float = FOLLOW_INTERVAL) -> Callable[[], None]:
        """Read in a background thread until the returned function is called."""
        stop = threading.Event()

        def loop() -> None:
            try:
                while not stop.wait(interval):
                    self.read()
            except OSError:
                pass  # finish() reads again and reports it

        thread = threading.Thread(target=loop, name="tv-journal", daemon=True)
        thread.start()

        def stop_following() -> None:
            stop.set()
            thread.join()

        return stop_following

    def finish(self) -> Journal:
        """The whole journal: what was read so far plus the rest of the file."""
        journal = self.journal
        if not self.path.exists():
            journal.warnings.append(
                f"{self.path}: no journal; pytest did not start or was killed early"
            )
            return journal
        self.read(final=True)
        journal.in_flight = list(self._started)
        return journal

    def _parse(self, raw: bytes) -> None:
        self._number += 1
        line = raw.decode("utf-8", errors="replace")
        if not line.strip():
            return
        journal = self.journal
        try:
            event = json.loads(line)
            kind = event["event"]
            if kind == "test":
                journal.tests.append(_test(event))
                self._started.pop(event["nodeid"], None)
            elif kind == "test_start":
                self._started[event["nodeid"]] = None
            elif kind == "session_start":
                journal.start = event
            elif kind == "session_finish":
                journal.finish = event
        except (ValueError, KeyError, TypeError) as exc:
            reason = "torn last line" if not line.endswith("\n") else type(exc).__name__
            journal.warnings.append(
                f"{self.path}:{self._number}: skipped a corrupt line ({reason})"
            )


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
