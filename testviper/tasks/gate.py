"""``inv gate``: judge a run (or a coverage file) against the configured rules."""

import os
import sys

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(
    help={
        "config": CONFIG_HELP,
        "run": "run id or prefix to judge (default: the latest run in history)",
        "coverage": "judge this coverage file instead (coverage.py JSON or Cobertura XML)",
        "base": "git ref for patch coverage, e.g. origin/main (lines changed since its merge base)",
        "baseline": "previous (default) | branch | median: what regressions are measured against",
        "baseline_branch": "compare with the last run of this branch (implies --baseline branch)",
        "median_runs": "runs in the median baseline (0, the default: gate.regression.median_runs)",
        "json": "write the verdict as JSON to this file",
        "junit": "write the verdict as JUnit XML to this file (each rule a testcase)",
        "quiet": "print only failures and warnings (nothing when everything passes)",
    }
)
@user_errors
def gate(
    c: Context,
    config: str | None = None,
    run: str | None = None,
    coverage: str | None = None,
    base: str | None = None,
    baseline: str | None = None,
    baseline_branch: str | None = None,
    median_runs: int = 0,
    json: str | None = None,
    junit: str | None = None,
    quiet: bool = False,
) -> None:
    """Quality gate for CI: exit 0 pass (warnings allowed), 1 failed, 2 usage/config/input error.

    Thresholds (overall, component, file), regression against a baseline, patch coverage
    against --base, failures, new failures, flaky and slower tests.
    """
    from pathlib import Path

    from testviper.errors import UserError
    from testviper.gating import outputs
    from testviper.gating.gate import GateOptions, evaluate

    if run and coverage:
        raise UserError("give --run or --coverage, not both")
    if baseline not in (None, "previous", "branch", "median"):
        raise UserError(f"--baseline: '{baseline}' is not one of previous, branch, median")
    if median_runs < 0:
        raise UserError("--median-runs: must be at least 1 (or 0 for the configured number)")
    s = settings(config, check_paths=False)
    targets = {}
    for flag, value in (("--json", json), ("--junit", junit)):
        if value:
            target = Path(value)
            if not target.parent.is_dir():
                raise UserError(f"{flag} {value}: no such directory '{target.parent}'")
            targets[flag] = target
    verdict = evaluate(
        s,
        GateOptions(
            run=run,
            coverage=Path(coverage) if coverage else None,
            base=base,
            baseline=baseline,
            baseline_branch=baseline_branch,
            median_runs=median_runs or None,
        ),
    )
    try:
        if "--json" in targets:
            outputs.write_json(verdict, targets["--json"])
        if "--junit" in targets:
            outputs.write_junit(verdict, targets["--junit"])
    except OSError as exc:
        raise UserError(f"cannot write the gate output ({exc})") from None
    summary = outputs.text(verdict, quiet=quiet)
    if summary:
        print(summary)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        prefix = ""
        workspace = os.environ.get("GITHUB_WORKSPACE")
        if workspace:
            try:
                inner = s.root.relative_to(Path(workspace).resolve())
                prefix = f"{inner.as_posix()}/" if inner.parts else ""
            except ValueError:
                pass
        for line in outputs.github_annotations(verdict, prefix=prefix):
            print(line)
        step_file = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_file:
            try:
                with open(step_file, "a", encoding="utf-8") as handle:
                    handle.write(outputs.step_summary(verdict))
            except OSError as exc:
                print(
                    f"testviper: warning: cannot append the step summary ({exc})", file=sys.stderr
                )
    if verdict.exit_code:
        raise Exit(code=verdict.exit_code)
