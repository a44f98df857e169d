"""Generate large synthetic inputs for ingest benchmarks.

``write_journal`` writes a run journal (JSON lines, one ``test`` event per test, as the
pytest plugin does) and ``write_coverage_json`` writes a coverage.py JSON report
(format 3, branch coverage on). Both are deterministic for a given ``seed``; their
numbers are self-consistent, so an ingester can cross-check counts.

Usage::

    python benchmarks/gen_journal.py OUT_DIR [--tests 10000] [--files 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

PYTEST_VERSION = "9.2.0"
COVERAGE_VERSION = "7.17.4"
TESTS_PER_MODULE = 50

# Cumulative thresholds on one uniform draw: ~5% failed, ~3% skipped, then rarer ones.
OUTCOME_WEIGHTS: list[tuple[str, float]] = [
    ("failed", 0.05),
    ("skipped", 0.03),
    ("xfailed", 0.01),
    ("error", 0.005),
    ("xpassed", 0.002),
]


def _outcome(rng: random.Random) -> str:
    """Draw one outcome according to OUTCOME_WEIGHTS, defaulting to passed."""
    draw = rng.random()
    for outcome, weight in OUTCOME_WEIGHTS:
        if draw < weight:
            return outcome
        draw -= weight
    return "passed"


def _failure_text(path: str, line: int, name: str, rng: random.Random) -> str:
    """A short assertion traceback shaped like pytest's ``longreprtext``."""
    got, want = rng.randrange(100), rng.randrange(100, 200)
    return (
        f"    def {name.split('[')[0]}():\n"
        f">       assert compute({got}) == {want}\n"
        f"E       assert {got + 1} == {want}\n"
        f"E        +  where {got + 1} = compute({got})\n"
        f"\n"
        f"{path}:{line}: AssertionError"
    )


def _test_event(
    index: int, rng: random.Random, start: float, workers: int
) -> tuple[dict[str, Any], float]:
    """Build the ``test`` event for test number ``index``; return it and its stop time."""
    module = index // TESTS_PER_MODULE
    path = f"tests/pkg_{module // 10:02d}/test_mod_{module:03d}.py"
    line = 10 + (index % TESTS_PER_MODULE) * 6
    name = f"test_case_{index % TESTS_PER_MODULE:02d}"
    domain = name
    nodeid = f"{path}::{name}"
    if module % 4 == 1:  # every fourth module groups its tests in a class
        cls = f"TestGroup{module:03d}"
        domain = f"{cls}.{name}"
        nodeid = f"{path}::{cls}::{name}"

    markers: list[str] = []
    params: dict[str, str] = {}
    if rng.random() < 0.2:
        # Values as the plugin stores them: repr() of the parameter.
        params = {"x": repr(rng.randrange(10)), "mode": repr(rng.choice(["fast", "exact"]))}
        ids = "-".join(p.strip("'") for p in params.values())
        nodeid += f"[{ids}]"
        domain += f"[{ids}]"
        markers.append("parametrize")
    if rng.random() < 0.1:
        markers.append("slow")
    if rng.random() < 0.05:
        markers.append("smoke")

    outcome = _outcome(rng)
    when = "call"
    longrepr: str | None = None
    stdout: str | None = None
    if outcome == "failed":
        longrepr = _failure_text(path, line + 1, name, rng)
        if rng.random() < 0.5:
            stdout = f"computing case {index}\nintermediate={rng.random():.6f}\n"
    elif outcome == "skipped":
        when = "setup"
        reason = rng.choice(["requires network", "not on this platform", "slow backend"])
        longrepr = f"Skipped: {reason}"
        markers.append("skip")
    elif outcome == "xfailed":
        longrepr = _failure_text(path, line + 1, name, rng) + "\nxfail reason: known bug"
        markers.append("xfail")
    elif outcome == "xpassed":
        longrepr = None
        markers.append("xfail")
    elif outcome == "error":
        when = "setup"
        longrepr = (
            f"file {path}, line {line}\n"
            f"  def {name}(database):\n"
            f"E       fixture 'database' not found\n"
            f"{path}:{line}"
        )

    log: str | None = None
    if rng.random() < 0.05:
        log = (
            f"INFO     app.service:service.py:{rng.randrange(20, 300)} handling case {index}\n"
            f"DEBUG    app.cache:cache.py:{rng.randrange(20, 300)} cache miss for key {index}\n"
        )

    # Log-normal gives many fast tests and a long tail, like real suites.
    duration = min(rng.lognormvariate(-6.0, 1.2), 5.0)
    if "slow" in markers:
        duration += rng.uniform(0.2, 1.5)
    stop = start + duration
    event = {
        "event": "test",
        "nodeid": nodeid,
        "outcome": outcome,
        "when": when,
        "duration": round(duration, 6),
        "start": start,
        "stop": stop,
        "longrepr": longrepr,
        "log": log,
        "stdout": stdout,
        "stderr": None,
        "markers": sorted(markers),
        "params": params,
        "worker": f"gw{index % workers}" if workers else None,
        "location": [path, line, domain],
    }
    return event, stop


def write_journal(
    path: Path | str,
    n_tests: int = 10000,
    *,
    seed: int = 0,
    workers: int = 0,
    start_time: float | None = None,
    complete: bool = True,
) -> Path:
    """Write a run journal with ``n_tests`` tests to ``path`` and return the path.

    ``workers`` > 0 labels tests ``gw0``.. as under xdist. ``start_time`` defaults to a
    moment shortly before now, so retention rules do not treat the run as old.
    ``complete=False`` omits ``session_finish``, like an interrupted run.
    """
    rng = random.Random(seed)
    path = Path(path)
    # About 0.1 s per test on average, so a generous 0.2 s keeps the whole run in the past.
    now = start_time if start_time is not None else time.time() - n_tests * 0.2
    failed = 0
    with path.open("w", encoding="utf-8") as handle:

        def emit(event: dict[str, Any]) -> None:
            handle.write(json.dumps(event) + "\n")

        emit(
            {
                "event": "session_start",
                "run_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "time": now,
                "pytest": PYTEST_VERSION,
                "args": ["-q", "--cov=src"],
                "rootdir": "/home/dev/project",
            }
        )
        for index in range(n_tests):
            now += rng.uniform(0.0001, 0.0005)  # collection/hook overhead between tests
            event, stop = _test_event(index, rng, now, workers)
            emit({"event": "test_start", "nodeid": event["nodeid"], "time": now})
            emit(event)
            failed += event["outcome"] in ("failed", "error")
            now = stop
        if complete:
            emit({"event": "session_finish", "exitstatus": 1 if failed else 0, "time": now})
    return path


def _display(percent: float) -> str:
    """Round like coverage.py: never show 0 or 100 unless exactly so."""
    shown = round(percent)
    if shown == 100 and percent < 100:
        shown = 99
    elif shown == 0 and percent > 0:
        shown = 1
    return str(shown)


def _summary(
    statements: int, covered: int, excluded: int, branches: int, covered_br: int, partial: int
) -> dict[str, Any]:
    """Coverage.py's summary block from raw counts."""
    total = statements + branches
    percent = 100.0 * (covered + covered_br) / total if total else 100.0
    pct_stmt = 100.0 * covered / statements if statements else 100.0
    pct_br = 100.0 * covered_br / branches if branches else 100.0
    return {
        "covered_lines": covered,
        "num_statements": statements,
        "percent_covered": percent,
        "percent_covered_display": _display(percent),
        "missing_lines": statements - covered,
        "excluded_lines": excluded,
        "percent_statements_covered": pct_stmt,
        "percent_statements_covered_display": _display(pct_stmt),
        "num_branches": branches,
        "num_partial_branches": partial,
        "covered_branches": covered_br,
        "missing_branches": branches - covered_br,
        "percent_branches_covered": pct_br,
        "percent_branches_covered_display": _display(pct_br),
    }


def _file_entry(rng: random.Random) -> dict[str, Any]:
    """One file's coverage data with consistent lines, branches and summary."""
    n_lines = rng.randrange(30, 600)
    statements = sorted(rng.sample(range(1, n_lines + 1), k=max(5, int(n_lines * 0.6))))
    # Most files are well covered, a few barely at all.
    hit_rate = rng.choice([0.95, 0.9, 0.85, 0.7, 0.3, 1.0])
    executed = [line for line in statements if rng.random() < hit_rate]
    executed_set = set(executed)
    missing = [line for line in statements if line not in executed_set]
    excluded = sorted(rng.sample(range(n_lines + 1, n_lines + 20), k=rng.randrange(0, 3)))

    executed_br: list[list[int]] = []
    missing_br: list[list[int]] = []
    partial = 0
    for source in statements:
        if rng.random() >= 0.15:  # ~15% of statements are branch points
            continue
        later = [line for line in statements if line > source]
        # Two destinations: the next statement and a later one, or -1 (function exit).
        targets = [later[0] if later else -1, rng.choice(later[1:]) if len(later) > 1 else -1]
        if targets[0] == targets[1]:
            targets[1] = -1 if targets[0] != -1 else source + 1
        arcs = [[source, target] for target in targets]
        if source not in executed_set:
            missing_br.extend(arcs)
        elif rng.random() < 0.8:
            executed_br.extend(arcs)
        else:
            executed_br.append(arcs[0])
            missing_br.append(arcs[1])
            partial += 1
    return {
        "executed_lines": executed,
        "summary": _summary(
            len(statements),
            len(executed),
            len(excluded),
            len(executed_br) + len(missing_br),
            len(executed_br),
            partial,
        ),
        "missing_lines": missing,
        "excluded_lines": excluded,
        "executed_branches": executed_br,
        "missing_branches": missing_br,
    }


def write_coverage_json(path: Path | str, n_files: int = 300, *, seed: int = 0) -> Path:
    """Write a coverage.py JSON report (format 3) covering ``n_files`` files to ``path``.

    Files are spread over ``src/app/pkg_NN/`` so component mappings have several
    directories to match. The per-function ``functions``/``classes`` regions that newer
    coverage.py versions add are not generated.
    """
    rng = random.Random(seed)
    path = Path(path)
    files: dict[str, dict[str, Any]] = {}
    for index in range(n_files):
        files[f"src/app/pkg_{index % 12:02d}/module_{index:04d}.py"] = _file_entry(rng)
    sums = {
        key: sum(entry["summary"][key] for entry in files.values())
        for key in (
            "num_statements",
            "covered_lines",
            "excluded_lines",
            "num_branches",
            "covered_branches",
            "num_partial_branches",
        )
    }
    totals = _summary(
        sums["num_statements"],
        sums["covered_lines"],
        sums["excluded_lines"],
        sums["num_branches"],
        sums["covered_branches"],
        sums["num_partial_branches"],
    )
    report = {
        "meta": {
            "format": 3,
            "version": COVERAGE_VERSION,
            "timestamp": dt.datetime.now().isoformat(),
            "branch_coverage": True,
            "show_contexts": False,
        },
        "files": files,
        "totals": totals,
    }
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: write ``journal.jsonl`` and ``coverage.json`` into OUT_DIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tests", type=int, default=10000)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--workers", type=int, default=0, help="label tests gw0.. (xdist)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    journal = write_journal(
        args.out_dir / "journal.jsonl", args.tests, seed=args.seed, workers=args.workers
    )
    coverage = write_coverage_json(args.out_dir / "coverage.json", args.files, seed=args.seed)
    print(f"wrote {journal} ({args.tests} tests) and {coverage} ({args.files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
