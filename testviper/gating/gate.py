"""Run every gate rule over one subject and return the verdict.

Missing data is always stated: no coverage in the run fails ``coverage.present``; no
baseline follows ``gate.on_missing_baseline`` (warn by default); coverage files carry no
test results, which the verdict notes.
"""

from dataclasses import dataclass
from pathlib import Path

from testviper.config import Settings
from testviper.coverage_data import Counts
from testviper.errors import UserError
from testviper.gating import regression, tests_health, thresholds
from testviper.gating.db import Reader
from testviper.gating.results import RuleResult, Verdict
from testviper.gating.sources import (
    Subject,
    coverage_from_history,
    read_coverage_file,
    tests_from_history,
)


@dataclass
class GateOptions:
    run: str | None = None  # run id, prefix, or None for the latest
    coverage: Path | None = None
    base: str | None = None
    baseline: str | None = None  # previous | branch | median (default from config)
    baseline_branch: str | None = None
    median_runs: int | None = None


def _current_git(root: Path) -> tuple[str | None, str | None]:
    """Branch and commit of the checkout a coverage file is judged in (None outside git)."""
    import os

    from testviper.gating.patch import _git

    # One process: the commit, then (--abbrev-ref applies to what follows) the branch.
    found = _git(root, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if found.returncode != 0:  # outside git, or no commit yet
        return None, None
    commit, name = found.stdout.split()[:2]
    if name == "HEAD":  # detached, as in most CI checkouts
        name = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or None
    return name, commit


def load_subject(settings: Settings, db: Reader, opts: GateOptions) -> Subject:
    if opts.coverage is not None:
        data = read_coverage_file(opts.coverage, settings.root, settings.config.coverage.paths)
        if not data.files:
            raise UserError(f"{opts.coverage}: the coverage report lists no files")
        branch, commit = _current_git(settings.root)
        subject = Subject("coverage_file", str(opts.coverage), data)
        subject.git_branch, subject.git_commit = branch, commit
        return subject
    try:
        run = db.find_run(opts.run or "latest")
    except UserError:
        if opts.run:
            raise
        raise UserError(
            "no run in history to judge; run the suite with `inv run` first, or pass "
            "--coverage FILE (coverage.py JSON or Cobertura XML)"
        ) from None
    subject = Subject(
        "run",
        run.id,
        coverage_from_history(db, run.id),
        tests=tests_from_history(db, run.id),
        run=run,
        git_branch=run.git_branch,
        git_commit=run.git_commit,
    )
    if run.status != "complete":
        subject.notes.append(f"run {run.id} is {run.status}: it stopped before the end")
    return subject


def evaluate(settings: Settings, opts: GateOptions) -> Verdict:
    cfg = settings.config.gate
    if opts.baseline == "branch" and not (opts.baseline_branch or cfg.regression.branch):
        raise UserError(
            "--baseline branch needs --baseline-branch NAME (or gate.regression.branch)"
        )
    db = Reader(settings)
    verdict = Verdict()
    try:
        subject = load_subject(settings, db, opts)
        verdict.subject = subject.describe()
        verdict.notes.extend(subject.notes)
        source = subject.label if subject.kind == "coverage_file" else f"run {subject.label}"
        data = subject.coverage
        comps: dict = {}
        if data is None:
            verdict.add(
                RuleResult(
                    "coverage.present",
                    "coverage",
                    "fail",
                    f"{source} has no coverage data (run without coverage, or its report "
                    "was lost); coverage rules cannot be judged",
                )
            )
        else:
            comps = thresholds.component_counts(settings, data, _stored_components(db, subject))
            thresholds.check_components_match(settings, comps, source)
            verdict.coverage = _coverage_summary(data, comps)
            verdict.add(thresholds.overall(settings, data))
            verdict.add(*thresholds.components(settings, comps))
            verdict.add(*thresholds.files(settings, data, source))

        # Baseline: regression and new failures.
        mode = opts.baseline or cfg.regression.baseline
        named = opts.baseline_branch or cfg.regression.branch
        if opts.baseline_branch and opts.baseline is None:
            mode = "branch"
        before = subject.run.id if subject.run is not None else None
        base, why = regression.find_baseline(
            db,
            settings,
            mode,
            subject.git_branch,
            named,
            opts.median_runs or cfg.regression.median_runs,
            before,
        )
        if base is None:
            severity = {"pass": "pass", "warn": "warn", "fail": "fail"}[cfg.on_missing_baseline]
            verdict.add(
                RuleResult(
                    "regression.baseline",
                    "gate.on_missing_baseline",
                    severity,
                    f"no baseline: {why}; regression and new-failure rules not judged",
                    priority=6,
                )
            )
        else:
            verdict.baseline = base.as_dict()
            if data is not None:
                files = {f.path: f.counts for f in data.files}
                verdict.add(*regression.regression(settings, base, data.totals, comps, files))

        if opts.base:
            from testviper.gating.patch import git_diff, patch_coverage

            diff = git_diff(settings.root, opts.base)
            head = diff.head
            if subject.git_commit and head and subject.git_commit != head:
                verdict.notes.append(
                    f"the judged run was on commit {subject.git_commit[:10]} but the checkout "
                    f"is at {head[:10]}: patch lines come from the checkout"
                )
            if data is None:
                verdict.add(
                    RuleResult(
                        "patch.coverage",
                        "gate.patch",
                        "fail",
                        f"patch coverage since {opts.base}: no coverage data to judge it",
                    )
                )
            else:
                results, verdict.patch = patch_coverage(settings, data, diff)
                verdict.add(*results)

        if subject.tests is None:
            verdict.notes.append(
                "a coverage file holds no test results: failure, flaky and duration rules "
                "were not judged (gate a stored run to include them)"
            )
        else:
            verdict.add(*tests_health.failures(settings, subject.tests))
            if base is not None:
                verdict.add(
                    *tests_health.new_failures(
                        settings, db, subject.tests, [r.id for r in base.runs]
                    )
                )
            verdict.add(*tests_health.flaky(settings, db, before))
            verdict.add(*tests_health.slow(settings, db, subject.tests, before))
    finally:
        db.close()
    return verdict


def _stored_components(db: Reader, subject: Subject) -> dict[str, tuple[int, Counts]]:
    """A stored run's component totals, as computed when it was ingested."""
    if subject.run is None:
        return {}
    return {
        r.component: (r.files, Counts(r.statements, r.missing, r.branches, r.covered_branches))
        for r in db.rows(
            "SELECT component, files, statements, missing, branches, covered_branches "
            "FROM component_coverage WHERE run_id = :run",
            run=subject.run.id,
        )
    }


def _coverage_summary(data: object, comps: dict) -> dict:
    totals = data.totals  # type: ignore[attr-defined]
    return {
        "percent": totals.percent,
        "statements": totals.statements,
        "missing": totals.missing,
        "branches": totals.branches,
        "covered_branches": totals.covered_branches,
        "components": {
            name: {
                "files": n,
                "percent": c.percent,
                "statements": c.statements,
                "missing": c.missing,
                "branches": c.branches,
                "covered_branches": c.covered_branches,
            }
            for name, (n, c, _) in comps.items()
        },
    }
