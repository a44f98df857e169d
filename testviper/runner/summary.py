"""The few lines ``inv run`` prints after pytest's own output."""

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
