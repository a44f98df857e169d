"""Reading a journal while the plugin is still appending to it (``JournalReader``)."""

import json
import time
from pathlib import Path
from typing import Any

from testviper.runner.journal import JournalReader, read_journal


def line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


def started(nodeid: str) -> bytes:
    return line({"event": "test_start", "nodeid": nodeid, "time": 1.0})


def finished(nodeid: str, outcome: str = "passed") -> bytes:
    return line({"event": "test", "nodeid": nodeid, "outcome": outcome, "duration": 0.1})


def test_a_line_still_being_written_waits_for_its_newline(tmp_path: Path) -> None:
    """A read that ends inside a line leaves it for the next read: it is parsed once,
    whole, with no warning."""
    path = tmp_path / "journal.jsonl"
    whole = finished("t.py::test_a")
    path.write_bytes(started("t.py::test_a") + whole[:20])
    reader = JournalReader(path)
    reader.read()
    assert reader.journal.tests == []
    with path.open("ab") as handle:
        handle.write(whole[20:] + line({"event": "session_finish", "exitstatus": 0}))
    reader.read()
    journal = reader.finish()
    assert [t.nodeid for t in journal.tests] == ["t.py::test_a"]
    assert journal.complete and journal.in_flight == [] and journal.warnings == []


def test_after_pytest_exits_a_torn_last_line_is_a_warning(tmp_path: Path) -> None:
    """The same partial line at the end of the run is torn: finish() warns with its line
    number and reports the test as in flight, exactly as reading the file at once does."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(started("t.py::test_a") + finished("t.py::test_a")[:20])
    reader = JournalReader(path)
    reader.read()
    journal = reader.finish()
    assert journal.tests == [] and journal.in_flight == ["t.py::test_a"]
    assert journal.warnings == [f"{path}:2: skipped a corrupt line (torn last line)"]
    assert read_journal(path) == journal


def test_follow_reads_in_the_background_until_stopped(tmp_path: Path) -> None:
    """follow() parses lines as they are appended; once stopped, finish() adds the rest."""
    path = tmp_path / "journal.jsonl"
    reader = JournalReader(path)
    stop = reader.follow(interval=0.01)  # before the file exists, as with a starting pytest
    path.write_bytes(started("t.py::test_a") + finished("t.py::test_a"))
    deadline = time.monotonic() + 10
    while not reader.journal.tests and time.monotonic() < deadline:
        time.sleep(0.01)
    stop()
    assert [t.nodeid for t in reader.journal.tests] == ["t.py::test_a"]
    with path.open("ab") as handle:
        handle.write(started("t.py::test_b") + finished("t.py::test_b", "failed"))
    journal = reader.finish()
    assert [(t.nodeid, t.outcome) for t in journal.tests] == [
        ("t.py::test_a", "passed"),
        ("t.py::test_b", "failed"),
    ]
    assert journal == read_journal(path)


def test_no_journal_at_all(tmp_path: Path) -> None:
    journal = JournalReader(tmp_path / "journal.jsonl").finish()
    assert journal.tests == [] and not journal.complete
    assert "no journal; pytest did not start" in journal.warnings[0]
