"""Overhead of the sampling in ``testviper profile`` over ``testviper run`` on one suite.

Both commands go through the same runner (``testviper.runner.run.run``); the only
difference is the sampler thread polling the pytest process tree. Generates the suite
from ``gen_suite.py`` into a temporary directory, warms up both commands once, then
times them interleaved and compares medians.

Target: median(testviper profile) / median(testviper run --no-deliver) <= 1.02.

Usage::

    python benchmarks/bench_profile.py [--rounds 5] [--modules 40] [--tests-per-module 50]
"""

from __future__ import annotations

import argparse
import sys

from _timing import CommandFailed, interleaved, median, venv_bin, work_dir
from gen_suite import generate_suite

TARGET = 1.02


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 if the target holds, 1 if not, 2 if a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--tests-per-module", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the generated suite")
    args = parser.parse_args(argv)

    with work_dir("testviper-bench-profile-", args.keep) as suite:
        testviper = str(venv_bin("testviper"))
        # Nothing is delivered by `profile`; `run` skips delivery too so only sampling differs.
        commands = {
            "run": [testviper, "run", "--no-deliver"],
            "profile": [testviper, "profile"],
        }
        times: dict[str, list[float]] = {label: [] for label in commands}
        generate_suite(suite, args.modules, args.tests_per_module)
        print(f"generated {args.modules * args.tests_per_module} tests in {suite}", flush=True)
        try:
            times.update(interleaved(commands, suite, args.rounds))
        except CommandFailed as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            print("RESULT profile_vs_run ERROR (a command failed, see above)")
            return 2

    profile_median, run_median = median(times["profile"]), median(times["run"])
    ratio = profile_median / run_median
    ok = ratio <= TARGET
    print(
        f"RESULT profile_vs_run ratio={ratio:.3f} (target <= {TARGET}) "
        f"profile_median={profile_median:.2f}s run_median={run_median:.2f}s "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
