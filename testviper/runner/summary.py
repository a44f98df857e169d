"""Runs as text: the summary ``inv run`` prints, the run list, one run in detail."""

from typing import Any

from testviper.coverage_data import Counts
from testviper.runner.run import Ingested


def _pct(counts: Counts | None) -> str:
    if counts is None or counts.percent is None:
        return "n/a"
    return f"{counts.percent:.2f} %"


def format_summary(result: Ingested) -> str:
    run = result.run
    tally = run.counts()
    parts = [f"{n} {'errors' if k == 'error' and n != 1 else k}" for k, n in tally.items() if n]
    parts = parts or ["no tests"]
    rerun = [t for t in run.tests if t.reruns]
    if rerun:  # flaky: the gate's flaky rule will name them
        recovered = sum(t.outcome == "passed" for t in rerun)
        parts.append(f"{len(rerun)} rerun ({recovered} then passed)")
    lines = [
        f"TestViper run {run.id} ({run.status}, exit {run.exit_code})",
        f"  tests:    {', '.join(parts)}",
    ]
    if run.coverage is not None:
        lines.append(
            f"  coverage: {_pct(run.coverage)} total"
            f" ({run.coverage.statements} statements, {run.coverage.missing} missed)"
        )
        width = max((len(n) for n in run.components), default=0)
        for name, (files, counts) in run.components.items():
            lines.append(f"    {name:<{width}}  {_pct(counts):>9}  ({files} files)")
    elif result.coverage_lost:
        lines.append("  coverage: lost (pytest stopped before writing its report)")
    elif result.coverage_error is None:
        lines.append("  coverage: not measured")
    if result.in_flight:
        lines.append(f"  in flight when pytest stopped: {', '.join(result.in_flight)}")
    lines.append(f"  journal:  {result.journal_path}")
    return "\n".join(lines)


def format_run_list(rows: list[Any]) -> str:
    """One line per run (rows of the ``runs`` table), newest first."""
    if not rows:
        return "no runs yet; `inv run` records one"
    lines = [
        f"{'run id':<36}  {'started (UTC)':<19}  {'status':<10}  {'exit':>4}  "
        f"{'tests':>6}  {'fail':>5}  {'cover':>7}  branch"
    ]
    for r in rows:
        cover = f"{r.cov_percent:.2f}" if r.cov_percent is not None else "-"
        code = "" if r.exit_code is None else r.exit_code
        lines.append(
            f"{r.id:<36}  {r.started_at:%Y-%m-%d %H:%M:%S}  {r.status:<10}  {code:>4}  "
            f"{r.tests_total:>6}  {r.failed + r.errors:>5}  {cover:>7}  {r.git_branch or '-'}"
        )
    return "\n".join(lines)


def format_run(r: Any, components: list[Any], problems: list[Any]) -> str:
    """One run in detail: a ``runs`` row, its component rows and its non-passing tests."""
    took = f", {r.duration:.1f} s" if r.duration is not None else ""
    lines = [
        f"run       {r.id}",
        f"project   {r.project}" + (f" ({r.label})" if r.label else ""),
        f"status    {r.status}, exit {r.exit_code}",
        f"started   {r.started_at:%Y-%m-%d %H:%M:%S} UTC{took}",
        f"git       {r.git_branch or '-'} {r.git_commit or '-'}"
        + (" (dirty)" if r.git_dirty else ""),
        f"host      {r.host}, Python {r.python}",
        f"tests     {r.tests_total} total: {r.passed} passed, {r.failed} failed, "
        f"{r.errors} errors, {r.skipped} skipped, {r.xfailed} xfailed, {r.xpassed} xpassed",
    ]
    if r.cov_percent is not None:
        lines.append(
            f"coverage  {r.cov_percent:.2f} % ({r.cov_statements} statements, "
            f"{r.cov_missing} missed)"
        )
    for comp in components:
        pct = f"{comp.percent:.2f} %" if comp.percent is not None else "n/a"
        lines.append(f"  {comp.component:<20} {pct:>9}  ({comp.files} files)")
    for t in problems:
        lines.append(f"{t.outcome.upper():<8} {t.nodeid}  {_reason(t.message)[:120]}")
    lines.append(f"run dir   {r.run_dir}")
    return "\n".join(lines)


def _reason(longrepr: str | None) -> str:
    """The line of a failure that says what went wrong: pytest's first ``E`` line."""
    text = (longrepr or "").strip().splitlines()
    errors = [line[1:].strip() for line in text if line.startswith("E ")]
    return errors[0] if errors else (text[-1] if text else "")
