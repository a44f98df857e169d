"""The quality gate's rules on real coverage data, real git repositories, real SQLite history.

A small package (``calc`` from conftest) is measured once per module with
``python -m pytest --cov --cov-branch`` in a git repository; each test copies that
repository, stores runs in its history (the real store, real SQLite) and evaluates the
gate in-process. Its real figures: arith.py 6 statements / 1 missed / 2 branches / 1
covered (75 %), text.py 8 / 4 / 4 / 1 (41.67 %), total 11/20 = 55 %.
"""

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import PACKAGE, git, write_files

from testviper.config import load
from testviper.coverage_data import CoverageData, read_coverage_json
from testviper.errors import UserError
from testviper.gating import outputs, thresholds
from testviper.gating.gate import GateOptions, evaluate
from testviper.gating.results import RuleResult, Verdict
from testviper.history.records import RunRecord, TestResult
from testviper.history.store import save_run
from testviper.ids import new_run_id
from testviper.runner.run import connect

CONFIG = """
project:
  name: calc
coverage:
  source: [src]
components:
  arith:
    source: [src/calc/arith.py]
  text:
    source: [src/calc/text.py]
"""
PYTEST_COV = [
    sys.executable,
    "-m",
    "pytest",
    "-q",
    "-p",
    "no:cacheprovider",
    "--cov=src",
    "--cov-branch",
    "--cov-report=json:.cov/cov.json",
    "--cov-report=xml:.cov/cov.xml",
]


def measure(root: Path) -> Path:
    """Run the package's tests with coverage (line + branch); return the JSON report."""
    subprocess.run(PYTEST_COV, cwd=root, capture_output=True, check=True)
    return root / ".cov" / "cov.json"


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gate") / "calc"
    write_files(root, {**PACKAGE, "testviper.yaml": CONFIG, ".gitignore": ".cov/\n.testviper/\n"})
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "calc")
    measure(root)
    return root


@pytest.fixture
def repo(measured: Path, tmp_path: Path) -> Path:
    """A fresh copy of the measured repository (git history and coverage reports)."""
    return Path(shutil.copytree(measured, tmp_path / "calc", symlinks=True))


def configure(root: Path, extra: str = "") -> object:
    (root / "testviper.yaml").write_text(CONFIG + extra)
    return load(root / "testviper.yaml")


def real(root: Path) -> CoverageData:
    return read_coverage_json(root / ".cov" / "cov.json")


def shift(data: CoverageData, path: str, n: int) -> CoverageData:
    """The same report with ``n`` more covered statements in ``path`` (n < 0: fewer)."""
    files = []
    for f in data.files:
        if f.path == path:
            executed, missing = list(f.executed_lines), list(f.missing_lines)
            if n > 0:
                executed, missing = sorted(executed + missing[:n]), missing[n:]
            else:
                executed, missing = executed[:n], sorted(missing + executed[n:])
            counts = replace(f.counts, missing=len(missing))
            f = replace(
                f, counts=counts, executed_lines=tuple(executed), missing_lines=tuple(missing)
            )
        files.append(f)
    return CoverageData(files=tuple(files), branch=data.branch)


_clock = [datetime(2026, 1, 1)]


def store(
    settings: object,
    data: CoverageData | None = None,
    tests: dict[str, str | tuple[str, float]] | None = None,
    branch: str | None = "main",
    commit: str | None = "c0ffee",
    dirty: bool = False,
    reruns: dict[str, int] | None = None,
) -> str:
    """Save one run in the project's history (the real store); return its id."""
    _clock[0] += timedelta(minutes=1)
    run_id = new_run_id(int(_clock[0].timestamp() * 1e9))
    results = []
    for nodeid, spec in (tests or {}).items():
        outcome, duration = spec if isinstance(spec, tuple) else (spec, 0.01)
        results.append(
            TestResult(
                nodeid=nodeid,
                outcome=outcome,
                phase="call",
                duration=duration,
                reruns=(reruns or {}).get(nodeid, 0),
            )
        )
    record = RunRecord(
        id=run_id,
        project="calc",
        status="complete",
        started_at=_clock[0],
        finished_at=_clock[0] + timedelta(seconds=5),
        command=["pytest"],
        run_dir="",
        environment={"git_branch": branch, "git_commit": commit, "git_dirty": dirty},
        tests=results,
    )
    if data is not None:
        record.files = list(data.files)
        record.coverage = data.totals
        record.components = {
            name: (n, c) for name, (n, c, _) in thresholds.component_counts(settings, data).items()
        }
    save_run(connect(settings), record)
    return run_id


def by_rule(verdict: Verdict) -> dict[str, RuleResult]:
    return {r.rule: r for r in verdict.results}


def gate(settings: object, **options: object) -> Verdict:
    return evaluate(settings, GateOptions(**options))


# --- thresholds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("levels", "severity", "key"),
    [
        ("{fail_under: 50, warn_under: 54}", "pass", "thresholds.overall"),
        ("{fail_under: 50, warn_under: 56}", "warn", "thresholds.overall.warn_under"),
        ("{fail_under: 55.5, warn_under: 60}", "fail", "thresholds.overall.fail_under"),
    ],
)
def test_overall_threshold(repo: Path, levels: str, severity: str, key: str) -> None:
    """Overall coverage (lines + branches, 55 %) against fail_under / warn_under."""
    s = configure(repo, f"thresholds:\n  overall: {levels}\n")
    verdict = gate(s, coverage=repo / ".cov" / "cov.json")
    result = by_rule(verdict)["coverage.overall"]
    assert (result.severity, result.key) == (severity, key)
    assert result.value == pytest.approx(55.0)
    assert verdict.exit_code == (1 if severity == "fail" else 0)
    if severity == "fail":
        assert "0.50 pp under fail_under 55.5" in result.message
        assert "9/14 lines, 2/6 branches" in result.message


def test_overall_matches_coverage_py_and_counts_branches(repo: Path) -> None:
    """The figure is coverage.py's own total, with branches; not the statement-only 64.29 %."""
    s = configure(repo)
    totals = json.loads((repo / ".cov" / "cov.json").read_text())["totals"]
    verdict = gate(s, coverage=repo / ".cov" / "cov.json")
    assert verdict.coverage["percent"] == pytest.approx(totals["percent_covered"])
    assert verdict.coverage["percent"] != pytest.approx(totals["percent_statements_covered"])
    assert verdict.coverage["branches"] == totals["num_branches"] == 6
    # No history yet: said so, and the gate (a reader) does not create the database.
    assert by_rule(verdict)["regression.baseline"].severity == "warn"
    assert not (repo / ".testviper" / "history.sqlite").exists()


def test_cobertura_gives_the_same_figures_as_json(repo: Path) -> None:
    measure(repo)  # Cobertura holds absolute paths: measured in this copy
    s = configure(repo)
    from_json = gate(s, coverage=repo / ".cov" / "cov.json").coverage
    from_xml = gate(s, coverage=repo / ".cov" / "cov.xml").coverage
    assert from_xml == from_json


def test_totals_are_weighted_by_statements_not_a_mean(repo: Path) -> None:
    """arith 75 % and text 41.67 % average to 58.33 %, but the project is 11/20 = 55 %."""
    s = configure(
        repo,
        "thresholds:\n  overall: {fail_under: 56}\n"
        "  components:\n    arith: {fail_under: 70}\n    text: {fail_under: 40}\n",
    )
    verdict = gate(s, coverage=repo / ".cov" / "cov.json")
    results = by_rule(verdict)
    comps = verdict.coverage["components"]
    mean = (comps["arith"]["percent"] + comps["text"]["percent"]) / 2
    assert mean == pytest.approx(58.333, abs=1e-3)
    assert results["coverage.overall"].severity == "fail"  # 55 < 56 < 58.33
    assert results["coverage.component.arith"].severity == "pass"
    assert results["coverage.component.text"].severity == "pass"


@pytest.mark.parametrize(
    ("level", "severity"),
    [("{fail_under: 40}", "pass"), ("{warn_under: 42}", "warn"), ("{fail_under: 45}", "fail")],
)
def test_component_threshold(repo: Path, level: str, severity: str) -> None:
    s = configure(repo, f"thresholds:\n  components:\n    text: {level}\n")
    result = by_rule(gate(s, coverage=repo / ".cov" / "cov.json"))["coverage.component.text"]
    assert result.severity == severity
    assert result.value == pytest.approx(100 * 5 / 12)
    assert "component text (1 files)" in result.message


def test_file_threshold_names_the_file_and_first_missed_line(repo: Path) -> None:
    s = configure(repo, "thresholds:\n  files:\n    'src/calc/*.py': 60\n")
    verdict = gate(s, coverage=repo / ".cov" / "cov.json")
    failing = [r for r in verdict.results if r.severity == "fail"]
    assert [(r.file, r.line, r.key) for r in failing] == [
        ("src/calc/text.py", 3, "thresholds.files.'src/calc/*.py'.fail_under")
    ]
    assert "41.67 % is 18.33 pp under fail_under 60" in failing[0].message


def test_file_threshold_warn_level_and_pass(repo: Path) -> None:
    s = configure(
        repo, "thresholds:\n  files:\n    'src/calc/arith.py': {fail_under: 50, warn_under: 80}\n"
    )
    assert [r.severity for r in gate(s, coverage=repo / ".cov" / "cov.json").results if r.file] == [
        "warn"
    ]
    s = configure(repo, "thresholds:\n  files:\n    'src/calc/arith.py': 70\n")
    verdict = gate(s, coverage=repo / ".cov" / "cov.json")
    assert by_rule(verdict)["coverage.files.src/calc/arith.py"].severity == "pass"


def test_rules_that_match_nothing_are_config_errors(repo: Path) -> None:
    s = configure(repo, "thresholds:\n  files:\n    'lib/*.py': 60\n")
    with pytest.raises(UserError, match=r"thresholds.files.'lib/\*.py': the pattern matches no"):
        gate(s, coverage=repo / ".cov" / "cov.json")
    (repo / "src" / "calc" / "extra.py").write_text("X = 1\n")
    s = configure(
        repo,
        "  extra:\n    source: [src/calc/extra.py]\n"
        "thresholds:\n  components:\n    extra: {fail_under: 10}\n",
    )
    with pytest.raises(UserError, match=r"thresholds\.components\.extra: the component's source"):
        gate(s, coverage=repo / ".cov" / "cov.json")


# --- baselines and regression ---------------------------------------------------------------


def test_missing_baseline_warns_by_default_and_follows_config(repo: Path) -> None:
    s = configure(repo)
    store(s, real(repo))
    result = by_rule(gate(s))["regression.baseline"]
    assert result.severity == "warn"
    assert "no baseline: no earlier complete run with coverage on branch 'main'" in result.message
    s = configure(repo, "gate:\n  on_missing_baseline: fail\n")
    assert gate(s).exit_code == 1
    s = configure(repo, "gate:\n  on_missing_baseline: pass\n")
    verdict = gate(s)
    assert by_rule(verdict)["regression.baseline"].severity == "pass"
    assert "no baseline" in outputs.text(verdict)  # stated, even when it passes


def test_regression_against_previous_run_on_the_same_branch(repo: Path) -> None:
    """2 fewer covered statements in text.py: 55 % -> 45 %, a 10 pp drop."""
    s = configure(repo, "gate:\n  regression: {max_drop: 2}\n")
    data = real(repo)
    store(s, data, branch="main")
    store(s, shift(data, "src/calc/text.py", -3), branch="other")  # not the baseline
    current = store(s, shift(data, "src/calc/text.py", -2), branch="main")
    verdict = gate(s, run=current)
    results = by_rule(verdict)
    assert results["regression.overall"].severity == "fail"
    assert "dropped 10.00 pp, more than max_drop 2 pp" in results["regression.overall"].message
    assert results["regression.component.text"].severity == "fail"
    assert results["regression.component.arith"].severity == "pass"
    assert verdict.baseline["mode"] == "previous"
    assert verdict.exit_code == 1


def test_regression_level_warn_and_noise_floor(repo: Path) -> None:
    s = configure(repo, "gate:\n  regression: {max_drop: 0, noise_floor: 0.1, level: warn}\n")
    data = real(repo)
    store(s, shift(data, "src/calc/text.py", 1))
    current = store(s, data)
    assert by_rule(gate(s, run=current))["regression.overall"].severity == "warn"
    # 10 pp of noise floor swallows the 5 pp drop.
    s = configure(repo, "gate:\n  regression: {max_drop: 0, noise_floor: 10, level: warn}\n")
    result = by_rule(gate(s, run=current))["regression.overall"]
    assert result.severity == "pass"
    assert "within the noise floor 10 pp" in result.message


def test_regression_per_file_needs_min_changed_statements(repo: Path) -> None:
    data = real(repo)
    s = configure(repo, "gate:\n  regression: {max_drop: 50, min_changed_statements: 2}\n")
    store(s, shift(data, "src/calc/arith.py", 1))  # arith 100 % then 87.5 %: 1 statement
    store(s, shift(data, "src/calc/text.py", 2))
    current = store(s, data)  # text: 2 more missed statements, 16.7 pp
    s = configure(repo, "gate:\n  regression: {max_drop: 10, min_changed_statements: 2}\n")
    results = by_rule(gate(s, run=current))
    assert results["regression.file.src/calc/text.py"].severity == "warn"
    assert results["regression.file.src/calc/text.py"].file == "src/calc/text.py"
    assert "regression.file.src/calc/arith.py" not in results


def test_baseline_branch_compares_with_the_named_branch(repo: Path) -> None:
    s = configure(repo, "gate:\n  regression: {max_drop: 1}\n")
    data = real(repo)
    main = store(s, shift(data, "src/calc/text.py", 3), branch="main")
    store(s, data, branch="feature")
    current = store(s, data, branch="feature")
    previous = gate(s, run=current)
    assert by_rule(previous)["regression.overall"].severity == "pass"  # vs feature
    verdict = gate(s, run=current, baseline_branch="main")
    assert verdict.baseline["run_ids"] == [main]
    assert verdict.baseline["mode"] == "branch"
    assert by_rule(verdict)["regression.overall"].severity == "fail"  # 70 % -> 55 %
    missing = gate(s, run=current, baseline_branch="release")
    assert "on branch 'release'" in by_rule(missing)["regression.baseline"].message


def test_median_baseline_ignores_one_outlier(repo: Path) -> None:
    """Baselines 55, 75 (outlier), 55: the median is 55, so a 55 % run has not dropped."""
    s = configure(repo, "gate:\n  regression: {max_drop: 1, baseline: median, median_runs: 3}\n")
    data = real(repo)
    store(s, shift(data, "src/calc/text.py", 4))  # ignored: 4 runs back
    store(s, data)
    store(s, shift(data, "src/calc/text.py", 4))
    store(s, data)
    current = store(s, data)
    verdict = gate(s, run=current)
    assert len(verdict.baseline["run_ids"]) == 3
    assert verdict.baseline["coverage_percent"] == pytest.approx(55.0)
    assert by_rule(verdict)["regression.overall"].severity == "pass"
    # Over the last 2 runs (55 % and the 75 % outlier) the median is 65 %: a 10 pp drop.
    assert by_rule(gate(s, run=current, median_runs=2))["regression.overall"].severity == "fail"


# --- test health ----------------------------------------------------------------------------


def test_failures_and_new_failures(repo: Path) -> None:
    s = configure(repo)
    data = real(repo)
    store(s, data, tests={"t.py::a": "passed", "t.py::b": "failed"})
    current = store(s, data, tests={"t.py::a": "failed", "t.py::b": "failed", "t.py::c": "error"})
    results = by_rule(gate(s, run=current))
    assert results["tests.failures"].severity == "fail"
    assert "3 of 3 tests failed or errored" in results["tests.failures"].message
    new = results["tests.new_failures"]
    assert new.severity == "fail"
    assert "2 tests fail now but did not in the baseline: t.py::a, t.py::c" in new.message
    s = configure(repo, "gate:\n  tests: {fail_on_failures: false, new_failures: warn}\n")
    verdict = gate(s, run=current)
    assert by_rule(verdict)["tests.failures"].severity == "warn"
    assert verdict.exit_code == 0


def test_flaky_same_commit_pass_and_fail(repo: Path) -> None:
    s = configure(repo)
    data = real(repo)
    store(s, data, commit="aaa", tests={"t.py::a": "passed", "t.py::b": "passed"})
    store(s, data, commit="bbb", tests={"t.py::a": "failed", "t.py::b": "passed"})
    # Different commits: a code change, not flakiness; a dirty tree is not that commit.
    store(s, data, commit="aaa", dirty=True, tests={"t.py::b": "failed"})
    current = store(s, data, commit="ccc", tests={"t.py::a": "passed", "t.py::b": "passed"})
    assert by_rule(gate(s, run=current))["tests.flaky"].severity == "pass"
    store(s, data, commit="ccc", tests={"t.py::a": "passed", "t.py::b": "failed"})
    verdict = gate(s)
    flaky = [r for r in verdict.results if r.rule.startswith("tests.flaky.")]
    assert [(r.rule, r.severity) for r in flaky] == [("tests.flaky.t.py::b", "warn")]
    assert "both passed and failed on commit ccc" in flaky[0].message
    s = configure(repo, "gate:\n  tests: {flaky: fail, fail_on_failures: false}\n")
    assert gate(s).exit_code == 1


def test_flaky_passed_on_rerun(repo: Path, tmp_path: Path) -> None:
    """A test that passed after reruns is flaky by its own run, clean tree or not; one
    that failed every attempt is a failure, not flaky."""
    s = configure(repo, "gate:\n  tests: {fail_on_failures: false}\n")
    data = real(repo)
    tests = {"t.py::a": "passed", "t.py::b": "failed", "t.py::c": "passed"}
    current = store(s, data, dirty=True, tests=tests, reruns={"t.py::a": 2, "t.py::b": 2})
    verdict = gate(s, run=current)
    flaky = [r for r in verdict.results if r.rule.startswith("tests.flaky")]
    assert [(r.rule, r.severity, r.file) for r in flaky] == [
        ("tests.flaky.t.py::a", "warn", "t.py")
    ]
    assert flaky[0].message == "flaky: t.py::a passed on rerun (2 reruns) (last 1 runs)"
    assert "passed on rerun (2 reruns)" in outputs.text(verdict, quiet=True)
    outputs.write_json(verdict, tmp_path / "gate.json")
    doc = json.loads((tmp_path / "gate.json").read_text())
    assert {(r["rule"], r["severity"]) for r in doc["results"]} >= {("tests.flaky.t.py::a", "warn")}
    assert doc["status"] == "warn"

    # Evidence of both kinds for one test is one result; reruns over several runs count.
    store(s, data, commit="ddd", tests={"t.py::a": "failed", "t.py::c": "passed"})
    last = store(s, data, commit="ddd", tests=tests, reruns={"t.py::a": 1})
    flaky = [r for r in gate(s, run=last).results if r.rule.startswith("tests.flaky")]
    assert [r.message for r in flaky] == [
        "flaky: t.py::a both passed and failed on commit ddd; "
        "passed on rerun (in 2 runs, up to 2 reruns) (last 3 runs)"
    ]
    s = configure(repo, "gate:\n  tests: {flaky: fail, fail_on_failures: false}\n")
    assert gate(s, run=current).exit_code == 1
    s = configure(repo, "gate:\n  tests: {flaky: 'off', fail_on_failures: false}\n")
    assert not [r for r in gate(s, run=current).results if r.rule.startswith("tests.flaky")]


def test_analytics_flaky_list_is_the_gates_rule(repo: Path) -> None:
    """Reports list the tests the gate calls flaky, reruns included: one rule."""
    from testviper.analytics.core import analyse, make_window

    s = configure(repo)
    store(s, real(repo), dirty=True, tests={"t.py::a": "passed"}, reruns={"t.py::a": 1})
    analytics = analyse(s, make_window(runs=5))
    assert [(p.nodeid, p.detail) for p in analytics.flaky] == [
        ("t.py::a", "flaky: t.py::a passed on rerun (1 rerun) (last 1 runs)")
    ]


def test_sqlalchemy_read_path_gives_the_same_results(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gating.db reads a plain SQLite history with sqlite3 and any other URL through
    SQLAlchemy. Forced through SQLAlchemy on the same file, the gate (every rule, patch,
    previous and median baselines, a coverage file) and the analytics say the same."""
    from testviper.analytics.core import analyse, make_window
    from testviper.gating import db

    git(repo, "checkout", "-q", "-b", "feature")
    text = repo / "src" / "calc" / "text.py"
    text.write_text(text.read_text() + UNCOVERED_FEATURE)
    git(repo, "commit", "-qam", "feature")
    measure(repo)
    s = configure(repo, "gate:\n  tests: {slow: {min_samples: 3}}\n")
    data = real(repo)
    for i in range(5):
        tests = {"t.py::a": ("passed", 1.0), "t.py::b": "passed" if i % 2 else "failed"}
        store(s, shift(data, "src/calc/arith.py", -(i % 2)), tests=tests, commit="aaa")
    current = store(
        s,
        data,
        tests={"t.py::a": ("passed", 3.0), "t.py::b": "passed", "t.py::c": "failed"},
        reruns={"t.py::b": 1},
        commit="bbb",
    )
    options = [
        {"run": current[:20], "base": "main"},
        {"baseline": "median", "median_runs": 3},
        {"coverage": repo / ".cov" / "cov.json", "base": "main"},
    ]
    window = make_window(runs=10)

    def results() -> tuple[list[dict], object]:
        verdicts = [outputs.to_json(gate(s, **o)) for o in options]
        return verdicts, replace(analyse(s, window), generated_at=datetime(2026, 1, 1))

    direct = results()
    assert {r["rule"] for r in direct[0][0]["results"]} >= {
        "patch.coverage",
        "tests.flaky.t.py::b",
        "tests.slow.t.py::a",
        "tests.new_failures",
    }
    forced: list[str] = []
    monkeypatch.setattr(db, "sqlite_file", forced.append)  # None: the SQLAlchemy path
    assert results() == direct
    assert forced and all(url.startswith("sqlite:///") for url in forced)


def test_slow_test_needs_enough_samples(repo: Path) -> None:
    s = configure(repo)
    data = real(repo)
    for _ in range(4):
        store(s, data, tests={"t.py::a": ("passed", 1.0), "t.py::b": ("passed", 0.1)})
    current = {"t.py::a": ("passed", 3.0), "t.py::b": ("passed", 0.4)}
    verdict = gate(s, run=store(s, data, tests=current))
    slow = by_rule(verdict)["tests.slow"]
    assert slow.severity == "info"
    assert "2 tests have fewer than 5 prior samples: no verdict" in slow.message
    # The judged run is now a fifth sample: a (3 s vs median 1 s) is slower by factor and
    # floor; b (0.4 s vs 0.1 s) by factor only, under the 0.5 s floor.
    verdict = gate(s, run=store(s, data, tests=current))
    slow = [r for r in verdict.results if r.rule.startswith("tests.slow.")]
    assert [(r.rule, r.severity) for r in slow] == [("tests.slow.t.py::a", "warn")]
    assert "took 3.00 s, 3.0x its median 1.00 s over 5 runs" in slow[0].message


# --- patch coverage -------------------------------------------------------------------------

UNCOVERED_FEATURE = """

def feature(x):
    if x > 10:
        return "big"
    return "small"
"""


def test_patch_coverage_after_an_edit(repo: Path) -> None:
    """New lines at the end of text.py: only the ``def`` line runs (at import): 1 of 4."""
    git(repo, "checkout", "-q", "-b", "feature")
    text = repo / "src" / "calc" / "text.py"
    text.write_text(text.read_text() + UNCOVERED_FEATURE)
    git(repo, "commit", "-qam", "feature")
    measure(repo)
    s = configure(repo, "gate:\n  patch: {fail_under: 50}\n")
    verdict = gate(s, coverage=repo / ".cov" / "cov.json", base="main")
    results = by_rule(verdict)
    patch = results["patch.coverage"]
    assert (patch.severity, patch.key) == ("fail", "gate.patch.fail_under")
    assert "25.00 % is 25.00 pp under fail_under 50" in patch.message
    assert "1/4 changed lines covered since main" in patch.message
    assert "src/calc/text.py: 14-16" in patch.message
    uncovered = results["patch.uncovered.src/calc/text.py:14"]
    assert (uncovered.file, uncovered.line, uncovered.end_line) == ("src/calc/text.py", 14, 16)
    assert uncovered.severity == "fail"
    assert verdict.patch["files"] == [
        {
            "path": "src/calc/text.py",
            "measured_lines": 4,
            "covered_lines": 1,
            "percent": 25.0,
            "uncovered": "14-16",
        }
    ]


def test_patch_coverage_counts_covered_changes_and_uncommitted_edits(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    arith = repo / "src" / "calc" / "arith.py"
    arith.write_text(arith.read_text().replace("return a + b", "total = a + b\n    return total"))
    measure(repo)  # not committed: the work tree counts, as with diff-cover
    s = configure(repo)
    patch = by_rule(gate(s, coverage=repo / ".cov" / "cov.json", base="main"))["patch.coverage"]
    assert patch.severity == "pass"
    assert "2/2 changed lines covered" in patch.message


def test_patch_after_rename_and_delete_counts_only_changed_lines(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "mv", "src/calc/text.py", "src/calc/words.py")
    words = repo / "src" / "calc" / "words.py"
    words.write_text(words.read_text().replace('return ""', 'return "-"'))
    for test in (repo / "tests" / "text").glob("*.py"):
        test.write_text(test.read_text().replace("calc.text", "calc.words"))
    git(repo, "rm", "-q", "src/calc/__init__.py")
    git(repo, "commit", "-qam", "rename text to words, drop __init__")
    measure(repo)
    s = load_with(repo, CONFIG.replace("src/calc/text.py", "src/calc/words.py"))
    verdict = gate(s, coverage=repo / ".cov" / "cov.json", base="main")
    # Renamed with one edit: only that line is "changed", not the whole file; the
    # deleted __init__.py has nothing left to cover. The edited line never runs.
    assert verdict.patch["measured_lines"] == 1
    assert verdict.patch["files"][0]["path"] == "src/calc/words.py"
    assert verdict.patch["files"][0]["uncovered"] == "3"
    assert by_rule(verdict)["patch.coverage"].severity == "warn"  # 0 % < warn_under 80


def load_with(root: Path, config: str) -> object:
    (root / "testviper.yaml").write_text(config)
    return load(root / "testviper.yaml")


def test_patch_uses_the_merge_base(repo: Path) -> None:
    """Work on main after the branch point is not part of the feature's patch."""
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "notes.txt").write_text("docs only\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "docs")
    git(repo, "checkout", "-q", "main")
    text = repo / "src" / "calc" / "text.py"
    text.write_text(text.read_text() + UNCOVERED_FEATURE)
    git(repo, "commit", "-qam", "main moves on")
    git(repo, "checkout", "-q", "feature")
    s = configure(repo, "gate:\n  patch: {fail_under: 100}\n")
    verdict = gate(s, coverage=repo / ".cov" / "cov.json", base="main")
    patch = by_rule(verdict)["patch.coverage"]
    assert patch.severity == "pass"
    assert "no measurable line changed" in patch.message
    assert verdict.patch["merge_base"] == git(repo, "merge-base", "main", "feature")


def test_patch_bad_ref_and_not_a_repository(repo: Path, tmp_path: Path) -> None:
    s = configure(repo)
    with pytest.raises(UserError, match="--base nope: not a git commit, branch or tag"):
        gate(s, coverage=repo / ".cov" / "cov.json", base="nope")
    plain = tmp_path / "plain"
    shutil.copytree(repo, plain, ignore=shutil.ignore_patterns(".git"))
    s = load(plain / "testviper.yaml")
    with pytest.raises(UserError, match="is not inside a git repository"):
        gate(s, coverage=plain / ".cov" / "cov.json", base="main")


# --- coverage inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such coverage file"),
        ("", "the coverage file is empty"),
        ('{"meta": {"format": 3}, "files": {"a.py": {"summ', "truncated or corrupt"),
        ('{"meta": {"format": 9}, "files": {}, "totals": {}}', "coverage JSON format 9"),
        ("<coverage><packages><pack", "not valid XML"),
        ("<report/>", "not a Cobertura coverage report"),
    ],
)
def test_bad_coverage_files(repo: Path, content: str | None, message: str) -> None:
    s = configure(repo)
    path = repo / "bad.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        gate(s, coverage=path)


def test_cobertura_from_another_machine_needs_path_mapping(repo: Path) -> None:
    xml = (repo / ".cov" / "cov.xml").read_text()
    xml = re.sub(r"<source>.*</source>", "<source>/home/runner/work/calc/src</source>", xml)
    (repo / "ci.xml").write_text(xml)
    s = configure(repo)
    with pytest.raises(UserError, match="no file in the coverage data belongs to any component"):
        gate(s, coverage=repo / "ci.xml")
    mapped = CONFIG.replace(
        "  source: [src]\n", "  source: [src]\n  paths:\n    src: [src, /home/runner/work/*/src]\n"
    )
    s = load_with(repo, mapped)
    verdict = gate(s, coverage=repo / "ci.xml")
    assert verdict.coverage["percent"] == pytest.approx(55.0)


def test_no_coverage_in_the_run_is_a_failure_not_a_pass(repo: Path) -> None:
    s = configure(repo)
    store(s, None, tests={"t.py::a": "passed"})
    verdict = gate(s)
    assert by_rule(verdict)["coverage.present"].severity == "fail"
    assert verdict.exit_code == 1


def test_no_run_in_history(repo: Path) -> None:
    with pytest.raises(UserError, match="no run in history to judge"):
        gate(configure(repo))


# --- outputs ---------------------------------------------------------------------------------

RESULT_KEYS = {
    "rule",
    "key",
    "severity",
    "message",
    "file",
    "line",
    "end_line",
    "value",
    "threshold",
}


def check_json_shape(doc: dict) -> None:
    """The documented schema (testviper/gating/outputs.py)."""
    assert doc["schema_version"] == 1
    assert doc["status"] in ("pass", "warn", "fail")
    assert doc["exit_code"] in (0, 1)
    assert set(doc["subject"]) == {"kind", "run_id", "path", "git_branch", "git_commit"}
    assert set(doc["summary"]) == {"fail", "warn", "info", "pass"}
    assert sum(doc["summary"].values()) == len(doc["results"])
    for result in doc["results"]:
        assert set(result) == RESULT_KEYS
        assert result["severity"] in ("fail", "warn", "info", "pass")
    ranks = [("fail", "warn", "info", "pass").index(r["severity"]) for r in doc["results"]]
    assert ranks == sorted(ranks)
    if doc["coverage"] is not None:
        assert {
            "percent",
            "statements",
            "missing",
            "branches",
            "covered_branches",
            "components",
        } <= set(doc["coverage"])
    if doc["baseline"] is not None:
        assert set(doc["baseline"]) == {"mode", "description", "run_ids", "coverage_percent"}
    if doc["patch"] is not None:
        assert {"base", "merge_base", "percent", "measured_lines", "covered_lines", "files"} <= set(
            doc["patch"]
        )
    assert isinstance(doc["notes"], list)


def test_json_and_junit_shapes(repo: Path, tmp_path: Path) -> None:
    s = configure(repo, "thresholds:\n  overall: {fail_under: 60}\n")
    data = real(repo)
    store(s, data, tests={"t.py::a": "passed"})
    store(s, data, tests={"t.py::a": "failed"})
    verdict = gate(s, base="main")
    outputs.write_json(verdict, tmp_path / "gate.json")
    doc = json.loads((tmp_path / "gate.json").read_text())
    check_json_shape(doc)
    assert doc["status"] == "fail"
    assert doc["results"][0]["severity"] == "fail"
    outputs.write_junit(verdict, tmp_path / "gate.xml")
    root = ET.parse(tmp_path / "gate.xml").getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert root.tag == "testsuites"
    assert int(suite.get("tests")) == len(cases) == len(verdict.results)
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == verdict.count("fail")
    assert {"coverage.overall", "tests.failures"} <= set(failed)


def test_github_annotations_stay_within_limits() -> None:
    verdict = Verdict(subject={"kind": "run", "run_id": "r1"})
    verdict.add(
        *(RuleResult(f"f{i}", "k", "fail", f"fail {i}", file="a.py", line=i + 1) for i in range(25))
    )
    verdict.add(*(RuleResult(f"w{i}", "k", "warn", f"warn, {i}%") for i in range(3)))
    verdict.add(RuleResult("top", "thresholds.overall", "fail", "most important", priority=0))
    lines = outputs.github_annotations(verdict)
    errors = [line for line in lines if line.startswith("::error")]
    warnings = [line for line in lines if line.startswith("::warning")]
    assert len(errors) == 10
    assert len(warnings) == 3
    assert errors[0].endswith("::most important")
    assert "17 more gate failures not annotated" in errors[-1]
    assert "::error file=a.py,line=1,title=testviper gate%3A k::fail 0" in errors
    assert warnings[0].endswith("::warn, 0%25")


def test_step_summary_is_a_markdown_table() -> None:
    verdict = Verdict(subject={"kind": "run", "run_id": "r1"})
    verdict.add(RuleResult("coverage.overall", "thresholds.overall.fail_under", "fail", "a | b"))
    text = outputs.step_summary(verdict)
    assert "| | Rule | Result | Where | Config key |" in text
    assert "| :x: | coverage.overall | a \\| b |  | `thresholds.overall.fail_under` |" in text


def test_quiet_text_is_empty_on_pass_and_lists_problems() -> None:
    verdict = Verdict(subject={"kind": "run", "run_id": "r1"})
    verdict.add(RuleResult("a", "k", "pass", "fine"))
    assert outputs.text(verdict, quiet=True) == ""
    verdict.add(RuleResult("b", "gate.x", "warn", "careful", file="f.py", line=3))
    assert outputs.text(verdict, quiet=True).splitlines()[1] == (
        "  WARN  careful at f.py:3  [gate.x]"
    )


# --- legacy thresholds ---------------------------------------------------------------------

SEED_COMPONENTS = """
project:
  name: calc
coverage:
  source: [src]
components:
  xradio: {source: [src/calc/arith.py]}
  astroviper: {source: [src/calc/text.py]}
  toolviper: {source: [src/calc]}
  graphviper: {source: [src/calc/arith.py]}
  integration: {source: [src/calc/text.py]}
  misc: {source: [src/calc/text.py]}
"""
SEED_YAML = """
thresholds:
  overall: {fail_under: 60}
  components:
    xradio: {fail_under: 70}
    astroviper: {fail_under: 65}
    toolviper: {fail_under: 60}
    graphviper: {fail_under: 60}
    integration: {fail_under: 50}
    misc: {fail_under: 30}
"""
# The seed's file (original-testviper.md §4.1), bands and all.
SEED_LEGACY = {
    "description": "Coverage thresholds",
    "thresholds": {
        "xradio": 70.0,
        "astroviper": 65.0,
        "toolviper": 60.0,
        "graphviper": 60.0,
        "testviper_integration": 50.0,
        "testviper_misc": 30.0,
        "overall": 60.0,
    },
    "quality_levels": {"critical": {"min": 0, "max": 40, "action": "FAIL"}},
    "notes": ["x"],
}


def test_legacy_thresholds_give_the_same_verdicts_as_yaml(repo: Path) -> None:
    from testviper.gating.legacy import import_into_config

    legacy = repo / "coverage_thresholds.json"
    legacy.write_text(json.dumps(SEED_LEGACY))
    s = load_with(repo, SEED_COMPONENTS)
    _, notes = import_into_config(s, legacy, write=True)
    assert "'testviper_misc' is the configured component 'misc'" in notes
    assert any("quality_levels not imported" in n for n in notes)
    imported = gate(load(repo / "testviper.yaml"), coverage=repo / ".cov" / "cov.json")
    written = gate(
        load_with(repo, SEED_COMPONENTS + SEED_YAML), coverage=repo / ".cov" / "cov.json"
    )
    verdicts = [(r.rule, r.severity, r.message) for r in imported.ordered()]
    assert verdicts == [(r.rule, r.severity, r.message) for r in written.ordered()]
    severities = {r.rule: r.severity for r in imported.results}
    # misc is 41.67 % against its own 30: it passes (the old bands failed it).
    assert severities["coverage.component.misc"] == "pass"
    assert severities["coverage.component.toolviper"] == "fail"  # 55 < 60
    assert severities["coverage.overall"] == "fail"


def test_legacy_import_keeps_the_rest_of_the_config(repo: Path) -> None:
    from testviper.gating.legacy import replace_section

    text = (
        "# head\nproject:\n  name: x\nthresholds:\n  overall: {fail_under: 1}\n\n"
        "# hist\nhistory: {}\n"
    )
    new = replace_section(text, "thresholds:\n  overall: {fail_under: 60.0}\n")
    assert new == (
        "# head\nproject:\n  name: x\nthresholds:\n  overall: {fail_under: 60.0}\n\n# hist\n"
        "history: {}\n"
    )
    assert replace_section("project: {}\n", "thresholds: {}\n") == "project: {}\n\nthresholds: {}\n"


def test_legacy_import_refuses_unknown_components_and_bad_values(repo: Path) -> None:
    from testviper.gating.legacy import import_into_config

    legacy = repo / "coverage_thresholds.json"
    legacy.write_text(json.dumps({"thresholds": {"ghost": 50, "overall": 60}}))
    s = configure(repo)
    before = (repo / "testviper.yaml").read_text()
    with pytest.raises(UserError, match=r"no component named 'ghost'.*nothing written"):
        import_into_config(s, legacy, write=True)
    assert (repo / "testviper.yaml").read_text() == before
    legacy.write_text(json.dumps({"thresholds": {"overall": 160}}))
    with pytest.raises(UserError, match=r"thresholds.overall: 160 is not a percentage"):
        import_into_config(s, legacy, write=False)


def test_invalid_file_glob_is_a_config_error(repo: Path) -> None:
    """A glob coverage.py cannot read is named with the thresholds.files key."""
    s = configure(repo, "thresholds:\n  files:\n    'src/***.py': 50\n")
    with pytest.raises(UserError, match=r"thresholds\.files: '.*/src/\*\*\*\.py': .* '\*\*\*'"):
        gate(s, coverage=repo / ".cov" / "cov.json")


def test_github_annotation_paths_are_relative_to_the_workspace() -> None:
    verdict = Verdict(subject={"kind": "run", "run_id": "r1"})
    verdict.add(RuleResult("p", "gate.patch", "warn", "m", file="src/a.py", line=3, end_line=5))
    assert outputs.github_annotations(verdict, prefix="svc/") == [
        "::warning file=svc/src/a.py,line=3,endLine=5,title=testviper gate%3A gate.patch::m"
    ]
