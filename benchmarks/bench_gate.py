"""Time ``testviper gate --base REF`` (all rules on) against ``diff-cover coverage.xml``.

Both judge the same git repository and the same coverage data: a generated 300-file
coverage.py JSON report (and its Cobertura XML twin for diff-cover), source files with
those line numbers committed on ``main``, and a ``feature`` branch that edits 30 of
them. TestViper's history holds 1,000 runs (300 files and 100 tests each) and gates the
newest with thresholds, components, file globs, regression, patch coverage, failures,
flaky (same commit, and passed on rerun) and slow tests. One warm-up each, then
interleaved rounds; ratio of medians.

    python benchmarks/bench_gate.py [--rounds 3] [--runs 1000] [--files 300] [--keep]
"""

import argparse
import json
import random
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import bench_env, median, venv_bin, work_dir
from gen_journal import write_coverage_json

TARGET = 1.0
CONFIG = """
project:
  name: benchgate
coverage:
  source: [src]
components:
  core: {source: ["src/app/pkg_0[0-3]/*.py"]}
  io: {source: ["src/app/pkg_0[4-7]/*.py"]}
  ui: {source: ["src/app/pkg_0[89]/*.py", "src/app/pkg_1*/*.py"]}
thresholds:
  overall: {fail_under: 50, warn_under: 60}
  components:
    core: {fail_under: 40}
    io: {fail_under: 40, warn_under: 95}
    ui: {fail_under: 40}
  files:
    "src/app/pkg_00/*.py": {warn_under: 90}
gate:
  regression: {max_drop: 1, baseline: previous}
  patch: {fail_under: 10, warn_under: 80}
  tests: {fail_on_failures: false, flaky: warn}
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def write_sources(root: Path, report: dict) -> None:
    for name, entry in report["files"].items():
        lines = entry["executed_lines"] + entry["missing_lines"] + entry["excluded_lines"]
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"value_{n} = {n}\n" for n in range(1, max(lines) + 1)))


def edit_sources(root: Path, report: dict, n_files: int, rng: random.Random) -> None:
    for name in rng.sample(sorted(report["files"]), n_files):
        path = root / name
        lines = path.read_text().splitlines(keepends=True)
        start = rng.randrange(0, max(1, len(lines) - 12))
        for i in range(start, min(len(lines), start + 10)):
            lines[i] = lines[i].replace("value_", "changed_")
        path.write_text("".join(lines))


def write_cobertura(report: dict, root: Path, dest: Path) -> None:
    """The same data as Cobertura XML, shaped as ``coverage xml`` writes it."""
    top = ET.Element("coverage", version="7", timestamp="0", complexity="0")
    ET.SubElement(ET.SubElement(top, "sources"), "source").text = str(root)
    packages = ET.SubElement(top, "packages")
    by_dir: dict[str, list[str]] = defaultdict(list)
    for name in report["files"]:
        by_dir[name.rsplit("/", 1)[0]].append(name)
    for directory, names in sorted(by_dir.items()):
        package = ET.SubElement(packages, "package", name=directory.replace("/", "."))
        classes = ET.SubElement(package, "classes")
        for name in names:
            entry = report["files"][name]
            cls = ET.SubElement(classes, "class", name=name.rsplit("/", 1)[1], filename=name)
            ET.SubElement(cls, "methods")
            lines = ET.SubElement(cls, "lines")
            arcs: dict[int, list[int]] = defaultdict(lambda: [0, 0])
            for src, _ in entry.get("executed_branches", []):
                arcs[src][0] += 1
                arcs[src][1] += 1
            for src, _ in entry.get("missing_branches", []):
                arcs[src][1] += 1
            hits = {n: 1 for n in entry["executed_lines"]} | {n: 0 for n in entry["missing_lines"]}
            for number in sorted(hits):
                line = ET.SubElement(lines, "line", number=str(number), hits=str(hits[number]))
                if number in arcs:
                    got, total = arcs[number]
                    line.set("branch", "true")
                    line.set("condition-coverage", f"{100 * got // total}% ({got}/{total})")
    ET.ElementTree(top).write(dest, encoding="utf-8", xml_declaration=True)


def fill_history(root: Path, coverage_json: Path, n_runs: int, rng: random.Random) -> None:
    from testviper.config import load
    from testviper.coverage_data import read_coverage_json
    from testviper.history.records import RunRecord, TestResult
    from testviper.history.store import save_run
    from testviper.ids import new_run_id
    from testviper.runner.run import component_matchers, connect

    settings = load(root / "testviper.yaml")
    data = read_coverage_json(coverage_json)
    components = {n: data.component(m, root) for n, m in component_matchers(settings).items()}
    history = connect(settings)
    clock = datetime(2026, 1, 1)
    nodeids = [f"tests/test_m{i // 10:02d}.py::test_{i}" for i in range(100)]
    for index in range(n_runs):
        clock += timedelta(minutes=30)
        newest = index == n_runs - 1
        tests = [
            TestResult(
                nodeid=nodeid,
                outcome="failed" if rng.random() < 0.01 else "passed",
                phase="call",
                duration=rng.uniform(0.01, 0.3),
                # Some pass only on rerun (pytest-rerunfailures): the flaky rule's second signal.
                reruns=1 if rng.random() < 0.005 else 0,
            )
            for nodeid in nodeids
        ]
        record = RunRecord(
            id=new_run_id(int(clock.timestamp() * 1e9)),
            project="benchgate",
            status="complete",
            started_at=clock,
            finished_at=clock + timedelta(seconds=90),
            command=["pytest"],
            run_dir="",
            environment={
                "git_branch": "feature" if newest or index % 3 == 0 else "main",
                "git_commit": f"{index // 4:040x}",
                "git_dirty": False,
            },
            tests=tests,
            files=list(data.files),
            coverage=data.totals,
            components=components,
        )
        save_run(history, record)
    history.engine.dispose()


def build(work: Path, n_runs: int, n_files: int) -> Path:
    rng = random.Random(7)
    root = work / "proj"
    root.mkdir(parents=True)
    coverage_json = write_coverage_json(root / "coverage.json", n_files, seed=1)
    report = json.loads(coverage_json.read_text())
    write_sources(root, report)
    (root / "testviper.yaml").write_text(CONFIG)
    (root / ".gitignore").write_text("coverage.*\n.testviper/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "sources")
    git(root, "checkout", "-q", "-b", "feature")
    edit_sources(root, report, 30, rng)
    git(root, "commit", "-q", "-am", "feature edits")
    write_cobertura(report, root, root / "coverage.xml")
    started = time.perf_counter()
    fill_history(root, coverage_json, n_runs, rng)
    print(f"history: {n_runs} runs stored in {time.perf_counter() - started:.1f} s", flush=True)
    return root


def timed(cmd: list[str], cwd: Path, ok: tuple[int, ...]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        print(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}", file=sys.stderr)
        raise SystemExit(2)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the generated repository")
    args = parser.parse_args(argv)
    with work_dir("bench_gate_", args.keep) as work:
        root = build(work, args.runs, args.files)
        gate = [str(venv_bin("testviper")), "gate", "--base", "main", "--json", "gate.json"]
        diff_cover = [str(venv_bin("diff-cover")), "coverage.xml", "--compare-branch", "main"]
        # Exit 1 is a failed gate, still a complete evaluation; the data decides that.
        timed(gate, root, (0, 1))
        timed(diff_cover, root, (0,))
        gate_times, dc_times = [], []
        for i in range(args.rounds):
            gate_times.append(timed(gate, root, (0, 1)))
            dc_times.append(timed(diff_cover, root, (0,)))
            print(f"round {i + 1}: gate {gate_times[-1]:.2f}s diff-cover {dc_times[-1]:.2f}s")
        verdict = json.loads((root / "gate.json").read_text())
        results = len(verdict["results"])
        ratio = median(gate_times) / median(dc_times)
        status = "PASS" if ratio <= TARGET else "FAIL"
        print(
            f"RESULT gate_vs_diffcover ratio={ratio:.2f} (target <= {TARGET:g}) "
            f"gate_median={median(gate_times):.2f}s diffcover_median={median(dc_times):.2f}s "
            f"runs={args.runs} files={args.files} gate_results={results} "
            f"patch={verdict['patch']['percent']:.1f}% {status}"
        )
        return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
