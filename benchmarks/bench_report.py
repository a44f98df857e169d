"""Time ``testviper report`` (all formats, 30-day window) against ``coverage html``.

The project is a generated package of 300 modules (``gen_suite``'s module template),
run once under ``coverage run --branch``: that real ``.coverage`` file is what
``coverage html`` renders, and its ``coverage json`` twin gives the 300 file rows of
every run in history. History holds 1,000 runs of 2,000 tests each, all inside the last
30 days (so the window holds every one of them), with ~1 % random failures (flaky
tests), slow tests and three components. One warm-up each, then interleaved rounds;
ratio of medians.

    python benchmarks/bench_report.py [--rounds 3] [--runs 1000] [--tests 2000]
                                      [--files 300] [--keep]
"""

import argparse
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import bench_env, median, venv_bin, work_dir
from gen_suite import module_source

TARGET = 1.0
CONFIG = """
project:
  name: benchreport
coverage:
  source: [src]
components:
  core: {source: ["src/benchrep/core/*.py"]}
  io: {source: ["src/benchrep/io/*.py"]}
  ui: {source: ["src/benchrep/ui/*.py"]}
thresholds:
  overall: {fail_under: 50, warn_under: 60}
  components:
    core: {fail_under: 40}
    io: {fail_under: 40, warn_under: 95}
    ui: {fail_under: 40}
"""
PACKAGES = ("core", "io", "ui")
DRIVER = """\
import importlib
import sys

sys.path.insert(0, "src")
for index, name in enumerate(sys.argv[1:]):
    mod = importlib.import_module(name)
    mod.classify(index + 3)
    mod.collatz_steps(index + 7)
    if index % 2:
        mod.is_prime(index + 11)
        mod.digit_sum(index * 37 + 1)
    if index % 3 == 0:
        mod.running_stats(list(range(index % 7 + 2)))
        mod.bucketize(list(range(index % 11 + 3)), 3)
    if index % 5 == 0:
        mod.run_length("aabbbc" * (index % 4 + 1))
"""


def write_package(root: Path, n_files: int) -> list[str]:
    """``n_files`` modules under src/benchrep/{core,io,ui}; their dotted names."""
    names = []
    for index in range(n_files):
        package = PACKAGES[index % len(PACKAGES)]
        name = f"benchrep.{package}.mod_{index:03d}"
        path = root / "src" / Path(*name.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(module_source(name, index + 1))
        names.append(name)
    (root / "src" / "benchrep" / "__init__.py").touch()
    return names


def run_coverage(root: Path, names: list[str]) -> Path:
    """Run the driver under coverage once: a real ``.coverage`` and its JSON report."""
    (root / "driver.py").write_text(DRIVER)
    coverage = str(venv_bin("coverage"))
    env = bench_env()
    subprocess.run(
        [coverage, "run", "--branch", "--source=src", "driver.py", *names],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [coverage, "json", "-o", "coverage.json"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    return root / "coverage.json"


def fill_history(root: Path, coverage_json: Path, n_runs: int, n_tests: int) -> None:
    """``n_runs`` runs every ~43 minutes up to now, each with the 300 file rows."""
    from testviper.config import load
    from testviper.coverage_data import read_coverage_json
    from testviper.history.records import RunRecord, TestResult
    from testviper.history.store import save_run
    from testviper.ids import new_run_id
    from testviper.runner.run import component_matchers, connect

    rng = random.Random(11)
    settings = load(root / "testviper.yaml")
    data = read_coverage_json(coverage_json)
    components = {n: data.component(m, root) for n, m in component_matchers(settings).items()}
    history = connect(settings)
    now = datetime.now(UTC).replace(tzinfo=None)
    step = timedelta(days=29) / n_runs
    nodeids = [f"tests/test_m{i // 50:03d}.py::test_case_{i}" for i in range(n_tests)]
    base = [rng.uniform(0.001, 0.2) for _ in nodeids]
    slow = set(rng.sample(range(n_tests), 20))
    flaky = set(rng.sample(range(n_tests), 40))
    for index in range(n_runs):
        clock = now - step * (n_runs - index)
        tests = []
        for i, nodeid in enumerate(nodeids):
            failed = rng.random() < (0.2 if i in flaky else 0.002)
            tests.append(
                TestResult(
                    nodeid=nodeid,
                    outcome="failed" if failed else "passed",
                    phase="call",
                    duration=base[i]
                    * (30 + index / 50 if i in slow else 1)
                    * rng.uniform(0.9, 1.1),
                    message=f"AssertionError: expected {i} got {index}" if failed else None,
                )
            )
        save_run(
            history,
            RunRecord(
                id=new_run_id(int(clock.replace(tzinfo=UTC).timestamp() * 1e9)),
                project="benchreport",
                status="complete",
                exit_code=1 if any(t.outcome == "failed" for t in tests) else 0,
                started_at=clock,
                finished_at=clock + timedelta(seconds=rng.uniform(80, 120)),
                command=["pytest"],
                run_dir="",
                environment={"git_branch": "main", "git_commit": f"{index // 3:040x}"},
                tests=tests,
                files=list(data.files),
                coverage=data.totals,
                components=components,
            ),
        )
        if (index + 1) % 100 == 0:
            print(f"  {index + 1} runs stored", flush=True)
    history.engine.dispose()


def build(work: Path, n_runs: int, n_tests: int, n_files: int) -> Path:
    root = work / "proj"
    root.mkdir(parents=True)
    (root / "testviper.yaml").write_text(CONFIG)
    names = write_package(root, n_files)
    coverage_json = run_coverage(root, names)
    started = time.perf_counter()
    fill_history(root, coverage_json, n_runs, n_tests)
    print(f"history: {n_runs} runs stored in {time.perf_counter() - started:.1f} s", flush=True)
    return root


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=bench_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        print(f"{' '.join(cmd)} exited {done.returncode}:\n{tail}", file=sys.stderr)
        raise SystemExit(2)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the generated project")
    args = parser.parse_args(argv)
    with work_dir("bench_report_", args.keep) as work:
        root = build(work, args.runs, args.tests, args.files)
        report = [str(venv_bin("testviper")), "report", "--days", "30", "--output", "out"]
        html = [str(venv_bin("coverage")), "html", "-d", "htmlcov"]
        (root / "out").mkdir()
        timed(report, root)
        timed(html, root)
        written = sorted(p.name for p in (root / "out").iterdir())  # one report's files
        report_times, html_times = [], []
        for i in range(args.rounds):
            report_times.append(timed(report, root))
            html_times.append(timed(html, root))
            print(f"round {i + 1}: report {report_times[-1]:.2f}s html {html_times[-1]:.2f}s")
        digest = next(p for p in (root / "out").iterdir() if p.suffix == ".md").read_text()
        if f", {args.runs} runs." not in digest:  # the window must hold every run
            print(f"the report does not cover {args.runs} runs:\n{digest[:400]}", file=sys.stderr)
            return 2
        ratio = median(report_times) / median(html_times)
        status = "PASS" if ratio <= TARGET else "FAIL"
        print(
            f"RESULT report_vs_coverage_html ratio={ratio:.2f} (target <= {TARGET:g}) "
            f"report_median={median(report_times):.2f}s html_median={median(html_times):.2f}s "
            f"runs={args.runs} tests={args.tests} files={args.files} "
            f"report_files={len(written)} {status}"
        )
        return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
