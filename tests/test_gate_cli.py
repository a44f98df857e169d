"""``testviper gate`` end to end: the installed command, real runs, exit codes, outputs."""

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import Cli, clean_env, write_files

pytestmark = pytest.mark.slow

FAILING = {"tests/text/test_more.py": "def test_more():\n    assert 1 == 2\n"}
# Fails on its first attempt in a project, passes on the second.
SECOND_TIME = {
    "tests/text/test_second.py": """
        from pathlib import Path

        MARK = Path(__file__).with_name("attempted")


        def test_second_time():
            first = not MARK.exists()
            MARK.touch()
            assert not first, "first attempt fails"
    """,
}


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root,
        capture_output=True,
        check=True,
    )


def one_line_error(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("testviper: error: ")
    assert text in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout


def test_gate_on_real_runs_with_github_outputs(project: Path, cli: Cli) -> None:
    """Two real runs: the second adds a failing test; the gate fails with annotations."""
    git(project, "init", "-q", "-b", "main")
    (project / ".gitignore").write_text(".testviper/\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "init")
    assert cli("run", cwd=project).returncode == 0
    first = cli("gate", cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline" in first.stdout  # stated, not a silent pass

    write_files(project, FAILING)
    assert cli("run", cwd=project).returncode == 1
    summary = project / "summary.md"
    env = clean_env(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    done = cli(
        "gate", "--json", "gate.json", "--junit", "gate.xml", "--base", "HEAD", cwd=project, env=env
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("TestViper gate: FAIL")
    assert "FAIL  1 of 4 tests failed or errored: tests/text/test_more.py::test_more" in done.stdout
    assert "[gate.tests.fail_on_failures]" in done.stdout
    errors = [line for line in done.stdout.splitlines() if line.startswith("::error ")]
    assert any("new_failures" in line for line in errors)
    assert "| :x: | tests.failures |" in summary.read_text()
    doc = json.loads((project / "gate.json").read_text())
    assert (doc["schema_version"], doc["status"], doc["exit_code"]) == (1, "fail", 1)
    assert doc["baseline"]["mode"] == "previous"
    suite = ET.parse(project / "gate.xml").getroot().find("testsuite")
    assert int(suite.get("failures")) == doc["summary"]["fail"] == 2

    quiet = cli("gate", "--quiet", "--run", doc["subject"]["run_id"][:13], cwd=project)
    assert quiet.returncode == 1
    assert all(
        line.startswith(("TestViper gate", "  FAIL", "  WARN"))
        for line in quiet.stdout.splitlines()
    )


def test_gate_reports_a_test_that_passed_on_rerun(project: Path, cli: Cli) -> None:
    """``run -- --reruns 2`` with a test that fails once: the run passes, the gate warns
    that the test is flaky (text and JSON), and fails with ``gate.tests.flaky: fail``."""
    write_files(project, SECOND_TIME)
    done = cli("run", "--", "--reruns", "2", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rerun" in done.stdout
    gate = cli("gate", "--json", "gate.json", cwd=project)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    expected = "flaky: tests/text/test_second.py::test_second_time passed on rerun (1 rerun)"
    assert f"WARN  {expected}" in gate.stdout
    doc = json.loads((project / "gate.json").read_text())
    flaky = [r for r in doc["results"] if r["rule"].startswith("tests.flaky.")]
    assert [(r["severity"], r["key"], r["file"]) for r in flaky] == [
        ("warn", "gate.tests.flaky", "tests/text/test_second.py")
    ]
    assert flaky[0]["message"].startswith(expected)
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "gate:\n  tests: {flaky: fail}\n")
    failed = cli("gate", cwd=project)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"FAIL  {expected}" in failed.stdout


def test_gate_input_errors_exit_2_in_one_line(project: Path, cli: Cli) -> None:
    one_line_error(cli("gate", cwd=project), "no run in history to judge")
    one_line_error(cli("gate", "--coverage", "missing.json", cwd=project), "no such coverage file")
    (project / "empty.json").write_text("")
    one_line_error(cli("gate", "--coverage", "empty.json", cwd=project), "is empty")
    (project / "cut.json").write_text('{"files": {"src/calc/a')
    one_line_error(cli("gate", "--coverage", "cut.json", cwd=project), "truncated or corrupt")
    one_line_error(
        cli("gate", "--coverage", "cut.json", "--baseline", "best", cwd=project),
        "--baseline: 'best' is not one of previous, branch, median",
    )
    one_line_error(
        cli("gate", "--median-runs", "-3", cwd=project), "--median-runs: must be at least 1"
    )


def test_gate_config_errors_exit_2(project: Path, cli: Cli) -> None:
    config = project / "testviper.yaml"
    base = config.read_text()
    config.write_text(base + "thresholds:\n  overall: {fail_under: 120}\n")
    one_line_error(cli("gate", cwd=project), "thresholds.overall.fail_under")
    config.write_text(base + "gate:\n  tests: {flaky: sometimes}\n")
    one_line_error(cli("gate", cwd=project), "gate.tests.flaky")


def test_import_legacy_prints_then_writes(project: Path, cli: Cli) -> None:
    legacy = project / "coverage_thresholds.json"
    legacy.write_text(json.dumps({"thresholds": {"arith": 70, "overall": 60}}))
    before = (project / "testviper.yaml").read_text()
    shown = cli("config.import-legacy", str(legacy), cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert "thresholds:\n  overall: {fail_under: 60.0}\n" in shown.stdout
    assert "    arith: {fail_under: 70.0}" in shown.stdout
    assert (project / "testviper.yaml").read_text() == before
    done = cli("config.import-legacy", str(legacy), "--write", cwd=project)
    assert done.returncode == 0, done.stderr
    assert (project / "testviper.yaml").read_text().startswith(before.split("components:")[0])
    assert cli("config.validate", cwd=project).returncode == 0
    one_line_error(
        cli("config.import-legacy", "nope.json", cwd=project),
        "nope.json: no such legacy thresholds file",
    )


def test_duplicate_component_names_are_a_config_error(project: Path, cli: Cli) -> None:
    """YAML would keep the last of two same-named components silently; the gate refuses."""
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "  arith:\n    source: [src/calc/text.py]\n")
    one_line_error(cli("gate", cwd=project), "duplicate key 'arith'")
