"""The wheel carries every module, the templates and the console script."""

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contents(tmp_path: Path) -> None:
    """A normal (non-editable) wheel holds all of testviper/, templates/ and `testviper`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("testviper-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "testviper").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    templates = {
        f"testviper/templates/{p.name}" for p in (REPO / "templates").iterdir() if p.is_file()
    }
    assert templates <= names, f"templates missing: {sorted(templates - names)}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "testviper = testviper.cli:main" in text
