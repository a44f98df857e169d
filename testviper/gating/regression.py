"""Coverage regression against a baseline taken from history.

Baselines: the previous run on the same branch (default), the last run of a named
branch, or the median of the last N runs on the same branch. Drops are in percentage
points; a drop within ``noise_floor`` is ignored, a drop beyond ``max_drop`` triggers the
rule. Per file, a drop counts only when the file gained at least
``min_changed_statements`` missed statements (tiny files flip by whole percents).
"""

import statistics
from dataclasses import dataclass, field
from typing import Any

from testviper.config import Settings
from testviper.coverage_data import Counts
from testviper.gating.db import in_list
from testviper.gating.results import RuleResult, pct


@dataclass
class Baseline:
    mode: str
    runs: list[Any]  # history rows, newest first
    description: str
    overall: float | None = None
    components: dict[str, float] = field(default_factory=dict)
    files: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # stmts, missing, %

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "description": self.description,
            "run_ids": [r.id for r in self.runs],
            "coverage_percent": self.overall,
        }


def find_baseline(
    db: Any,
    settings: Settings,
    mode: str,
    branch: str | None,
    named_branch: str | None,
    median_runs: int,
    before: str | None,
) -> tuple[Baseline | None, str]:
    """The baseline runs, or None and a sentence saying why there is none."""
    params: dict[str, Any] = {"project": settings.project_name}
    where = ["project = :project", "cov_statements IS NOT NULL", "status = 'complete'"]
    if before is not None:
        where.append("id < :before")
        params["before"] = before
    if mode == "branch" or branch is not None:
        params["branch"] = named_branch if mode == "branch" else branch
        where.append("git_branch = :branch")
        text_where = f"on branch '{params['branch']}'"
    else:
        text_where = "(the current run has no git branch, so any branch)"
    params["limit"] = median_runs if mode == "median" else 1
    rows = db.rows(
        "SELECT id, git_commit, cov_statements, cov_missing, cov_branches, "
        f"cov_covered_branches FROM runs WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT :limit",
        **params,
    )
    if not rows:
        return None, f"no earlier complete run with coverage {text_where} in history"
    if mode == "median":
        text = f"median of the last {len(rows)} runs {text_where}"
        if len(rows) < median_runs:
            text += f" (only {len(rows)} of the {median_runs} wanted)"
    else:
        text = f"run {rows[0].id} {text_where} (commit {(rows[0].git_commit or '?')[:10]})"
    base = Baseline(mode, rows, text)
    ids = [r.id for r in rows]
    params = {}
    by_comp: dict[str, list[float]] = {}
    for row in db.rows(
        "SELECT component, percent FROM component_coverage WHERE run_id IN "
        + in_list("r", ids, params),
        **params,
    ):
        if row.percent is not None:
            by_comp.setdefault(row.component, []).append(row.percent)
    base.components = {name: statistics.median(v) for name, v in by_comp.items()}
    percents = [p for p in (_percent(r) for r in rows) if p is not None]
    base.overall = statistics.median(percents) if percents else None
    if mode != "median":
        base.files = {
            r.path: (r.statements, r.missing, r.percent)
            for r in db.rows(
                "SELECT path, statements, missing, percent FROM file_coverage WHERE run_id = :run",
                run=ids[0],
            )
        }
    return base, ""


def _percent(row: Any) -> float | None:
    counts = Counts(
        row.cov_statements or 0,
        row.cov_missing or 0,
        row.cov_branches or 0,
        row.cov_covered_branches or 0,
    )
    return counts.percent


def _drop_result(
    rule: str, what: str, before: float, now: float, settings: Settings, priority: int, **where: Any
) -> RuleResult:
    cfg = settings.config.gate.regression
    drop = before - now
    text = f"{what} {pct(now)} vs baseline {pct(before)} ({now - before:+.2f} pp)"
    if drop > max(cfg.max_drop, cfg.noise_floor):
        return RuleResult(
            rule,
            "gate.regression.max_drop",
            cfg.level,
            f"{text}: dropped {drop:.2f} pp, more than max_drop {cfg.max_drop:g} pp",
            value=-drop,
            threshold=cfg.max_drop,
            priority=priority,
            **where,
        )
    if drop > cfg.noise_floor:
        note = f"within max_drop {cfg.max_drop:g} pp"
    elif drop > 0:
        note = f"within the noise floor {cfg.noise_floor:g} pp, ignored"
    else:
        note = "no drop"
    return RuleResult(
        rule, "gate.regression.max_drop", "pass", f"{text}: {note}", value=-drop, priority=priority
    )


def regression(
    settings: Settings,
    base: Baseline,
    total: Counts,
    components: dict[str, tuple[int, Counts, Any]],
    files: dict[str, Counts],
) -> list[RuleResult]:
    results = []
    now = total.percent
    if now is not None and base.overall is not None:
        results.append(
            _drop_result("regression.overall", "total coverage", base.overall, now, settings, 5)
        )
    for name, (n, counts, _) in components.items():
        before = base.components.get(name)
        if before is None or counts.percent is None or not n:
            continue
        results.append(
            _drop_result(
                f"regression.component.{name}",
                f"component {name}",
                before,
                counts.percent,
                settings,
                15,
            )
        )
    cfg = settings.config.gate.regression
    if cfg.files == "off" or not base.files:
        return results
    for path, counts in files.items():
        old = base.files.get(path)
        if old is None or counts.percent is None:
            continue
        _, missing, before = old
        drop = before - counts.percent
        gained = counts.missing - missing
        if drop > max(cfg.max_drop, cfg.noise_floor) and gained >= cfg.min_changed_statements:
            results.append(
                RuleResult(
                    f"regression.file.{path}",
                    "gate.regression.files",
                    cfg.files,
                    f"file {path} {pct(counts.percent)} vs baseline {pct(before)}: dropped "
                    f"{drop:.2f} pp, {gained} more missed statements "
                    f"(judged from min_changed_statements {cfg.min_changed_statements})",
                    file=path,
                    value=-drop,
                    threshold=cfg.max_drop,
                    priority=40,
                )
            )
    return results
