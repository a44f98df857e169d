"""A full disk under the state directory: one clear line, no traceback, nothing half-made.

Needs a small tmpfs, which only root can mount; elsewhere the tests are skipped.
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli


@pytest.fixture
def tiny_state(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs for the state directory."""
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(mount: Path, leave_kib: int) -> None:
    """Fill the file system until about ``leave_kib`` KiB are left."""
    total = 512 - leave_kib
    (mount / "filler").write_bytes(b"\0" * total * 1024)


def use_state(project: Path, state: Path) -> None:
    config = project / "testviper.yaml"
    config.write_text(f"paths:\n  state: {state}\n" + config.read_text())


def test_disk_full_during_run_keeps_what_was_recorded(
    project: Path, cli: Cli, tiny_state: Path
) -> None:
    """Space runs out while the run is stored: exit 2, one line naming the kept run."""
    use_state(project, tiny_state)
    fill(tiny_state, leave_kib=16)
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("testviper: error")]
    assert len(errors) == 1, done.stderr
    assert "kept in" in errors[0] and "inv runs.ingest" in errors[0]
    assert "Traceback" not in done.stderr.replace("INTERNALERROR", "")
    assert "3 passed" in done.stdout  # pytest itself reported the results
    kept = errors[0].split("kept in ")[1].split(":")[0]
    (tiny_state / "filler").unlink()
    journal = Path(kept) / "journal.jsonl"
    recorded = journal.read_text().count('"event": "test"') if journal.exists() else 0
    if recorded < 3:  # the journal itself hit the full disk, and said so
        assert "testviper: journal stopped" in done.stdout + done.stderr
    again = cli("runs.ingest", kept, cwd=project)
    assert again.returncode == 0, again.stderr
    assert f"{recorded} passed" in again.stdout if recorded else "no tests" in again.stdout


def test_disk_full_before_start_leaves_no_run_directory(
    project: Path, cli: Cli, tiny_state: Path
) -> None:
    """No room for the run's metadata: exit 2 before pytest starts, no run directory left."""
    use_state(project, tiny_state)
    (tiny_state / "runs").mkdir()
    fill(tiny_state, leave_kib=0)
    done = cli("run", cwd=project)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("testviper: error:") and len(done.stderr.splitlines()) == 1
    assert "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    assert "test session starts" not in done.stdout
    assert list((tiny_state / "runs").iterdir()) == []
