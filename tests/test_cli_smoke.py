from pathlib import Path

from conftest import Cli


def test_run_on_project_prints_summary_and_stores_run(project: Path, cli: Cli) -> None:
    done = cli("run", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "3 passed" in done.stdout
    assert "arith" in done.stdout and "text" in done.stdout
    listed = cli("runs", cwd=project)
    assert "complete" in listed.stdout
