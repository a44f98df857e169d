"""Time to store a 10,000-test run with 300-file coverage in a fresh SQLite history.

Measures ``testviper.runner.run.ingest`` in-process: read the journal, parse the
coverage JSON, total five components, write every row. The end-to-end
``testviper runs.ingest`` (interpreter start-up included) is timed too, for information.

Target: median ingest <= 1.5 s; the ratio printed is median / 1.5 s.

Usage::

    python benchmarks/bench_ingest.py [--rounds 5] [--tests 10000] [--files 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _timing import CommandFailed, bench_env, median, time_command, venv_bin
from gen_journal import write_coverage_json, write_journal

BUDGET = 1.5
CONFIG = """\
project: {name: ingest-bench}
components:
  c0: {source: [src/app/pkg_00, src/app/pkg_01]}
  c1: {source: ["src/app/pkg_0[2-5]"]}
  c2: {source: ["src/app/pkg_1*"]}
  c3: {source: ["src/app/pkg_0[6-9]/module_00*.py"]}
  c4: {source: ["src/**/module_01*.py"]}
"""


def make_run_dir(root: Path, tests: int, files: int) -> Path:
    """A project root with a config and one run directory, as `inv run` leaves them."""
    (root / "testviper.yaml").write_text(CONFIG)
    run_dir = root / ".testviper" / "runs" / "bench"
    run_dir.mkdir(parents=True)
    write_journal(run_dir / "journal.jsonl", tests)
    write_coverage_json(run_dir / "coverage.json", files)
    # The measured source files exist, so the component paths validate as in a project.
    for name in json.loads((run_dir / "coverage.json").read_text())["files"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()
    meta = {
        "run_id": "019b0000-0000-7000-8000-00000000bench",
        "project": "ingest-bench",
        "root": str(root),
        "started_at": datetime.now(UTC).isoformat(),
        "command": ["pytest"],
        "environment": {},
        "exit_code": 1,
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 if the target holds, 1 if not, 2 if a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=300)
    args = parser.parse_args(argv)

    from testviper.config import load
    from testviper.runner.run import connect, ingest

    with tempfile.TemporaryDirectory(prefix="tv-bench-ingest-") as tmp:
        root = Path(tmp)
        run_dir = make_run_dir(root, args.tests, args.files)
        settings = load(root / "testviper.yaml")
        db = settings.state_dir / "history.sqlite"
        print(f"journal: {args.tests} tests, coverage: {args.files} files, in {run_dir}")
        times = []
        for n in range(args.rounds):
            for leftover in db.parent.glob("history.sqlite*"):
                leftover.unlink()
            history = connect(settings)  # a fresh, migrated database each round
            started = time.perf_counter()
            result = ingest(settings, run_dir, history)
            times.append(time.perf_counter() - started)
            history.engine.dispose()
            tally = result.run.counts()
            print(
                f"round {n + 1}/{args.rounds}: {times[-1]:.3f}s "
                f"({sum(tally.values())} tests, {len(result.run.files)} files)",
                flush=True,
            )
        try:
            cli = time_command([venv_bin("testviper"), "runs.ingest", run_dir], root, bench_env())
        except CommandFailed as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            print("RESULT ingest ERROR (testviper runs.ingest failed, see above)")
            return 2

    measured = median(times)
    ratio = measured / BUDGET
    ok = measured <= BUDGET
    print(
        f"RESULT ingest ratio={ratio:.2f} (target <= 1.00, i.e. <= {BUDGET}s) "
        f"ingest_median={measured:.3f}s cli_runs_ingest={cli:.3f}s {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
