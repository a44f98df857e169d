"""Overhead of ``testviper run`` over plain ``pytest --cov`` on a 2,000-test suite.

Generates the suite from ``gen_suite.py`` into a temporary directory, warms up both
commands once, then times them interleaved and compares medians.

Target: median(testviper run) / median(pytest --cov) <= 1.05.

Usage::

    python benchmarks/bench_run.py [--rounds 3] [--keep] [--runner auto|testviper|inv]
"""

from __future__ import annotations

import argparse
import os
import sys

from _timing import REPO_ROOT, CommandFailed, interleaved, median, venv_bin, work_dir
from gen_suite import generate_suite

TARGET = 1.05


def runner_command(choice: str) -> list[str]:
    """The TestViper command to time.

    The suite lives outside the repository, so a bare ``inv run`` would not find
    tasks.py; the installed ``testviper`` script carries the same tasks. ``inv -r``
    points invoke at the repository's tasks.py as a fallback.
    """
    testviper = venv_bin("testviper")
    if choice == "testviper" or (choice == "auto" and testviper.exists()):
        return [str(testviper), "run"]
    return [str(venv_bin("inv")), "-r", str(REPO_ROOT), "run"]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 if the target holds, 1 if not, 2 if a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each command")
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--tests-per-module", type=int, default=50)
    parser.add_argument("--runner", choices=["auto", "testviper", "inv"], default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the generated suite")
    args = parser.parse_args(argv)

    with work_dir("testviper-bench-run-", args.keep) as suite:
        generate_suite(suite, args.modules, args.tests_per_module)
        total = args.modules * args.tests_per_module
        print(f"generated {total} tests in {suite}", flush=True)
        # Branch coverage on both sides: TestViper measures branches by default.
        pytest_cmd = [sys.executable, "-m", "pytest", "-q", "--cov=benchpkg", "--cov-branch"]
        tv_cmd = runner_command(args.runner)
        commands = {"pytest": pytest_cmd, "inv_run": tv_cmd}
        for label, cmd in commands.items():
            print(f"{label}: {' '.join(cmd)}", flush=True)

        try:
            times = interleaved(commands, suite, args.rounds)
        except CommandFailed as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            print("RESULT run_vs_pytest ERROR (a command failed, see above)")
            return 2

    run_median = median(times["inv_run"])
    pytest_median = median(times["pytest"])
    ratio = run_median / pytest_median
    ok = ratio <= TARGET
    # The 1-minute load average: on a shared machine it says how far to trust the ratio.
    load = os.getloadavg()[0]
    print(
        f"RESULT run_vs_pytest ratio={ratio:.2f} (target <= {TARGET}) "
        f"inv_run_median={run_median:.2f}s pytest_median={pytest_median:.2f}s "
        f"load={load:.2f} {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
