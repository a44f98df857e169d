"""Test health: failures, new failures against the baseline, flaky and slower tests.

- flaky: within the last ``flaky_window`` runs of the project, the same test both
  passed and failed (or errored) on the same git commit, in runs from a clean work tree,
  or it passed on rerun (pytest-rerunfailures): a failed attempt and a passing one on
  the same code, whatever the state of the work tree;
- slow: a test slower than the median of its prior passing durations by both
  ``factor`` and ``floor`` seconds, judged only with at least ``min_samples`` samples.
"""

import statistics
from collections import defaultdict
from typing import Any

from testviper.config import Settings
from testviper.gating.db import in_list
from testviper.gating.results import RuleResult
from testviper.gating.sources import TestRow

BAD = ("failed", "error")
SHOWN = 5


def _names(nodeids: list[str]) -> str:
    shown = ", ".join(nodeids[:SHOWN])
    return shown + (f" and {len(nodeids) - SHOWN} more" if len(nodeids) > SHOWN else "")


def _file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def failures(settings: Settings, tests: list[TestRow]) -> list[RuleResult]:
    bad = sorted(t.nodeid for t in tests if t.outcome in BAD)
    if not bad:
        return [
            RuleResult(
                "tests.failures",
                "gate.tests.fail_on_failures",
                "pass",
                f"no failed or erroring tests among {len(tests)}",
                priority=3,
            )
        ]
    severity = "fail" if settings.config.gate.tests.fail_on_failures else "warn"
    results = [
        RuleResult(
            "tests.failures",
            "gate.tests.fail_on_failures",
            severity,
            f"{len(bad)} of {len(tests)} tests failed or errored: {_names(bad)}",
            value=len(bad),
            priority=3,
        )
    ]
    return results


def new_failures(
    settings: Settings, conn: Any, tests: list[TestRow], baseline_ids: list[str]
) -> list[RuleResult]:
    """Tests failing now that did not fail in the baseline run(s)."""
    level = settings.config.gate.tests.new_failures
    if level == "off":
        return []
    bad = {t.nodeid for t in tests if t.outcome in BAD}
    params: dict[str, Any] = {}
    before = {
        row.nodeid
        for row in conn.rows(
            "SELECT nodeid FROM tests WHERE outcome IN ('failed', 'error') AND run_id IN "
            + in_list("r", baseline_ids, params),
            **params,
        )
    }
    new = sorted(bad - before)
    if not new:
        known = len(bad)
        text = (
            f"no new failures ({known} failing also failed in the baseline)"
            if known
            else ("no new failures")
        )
        return [RuleResult("tests.new_failures", "gate.tests.new_failures", "pass", text)]
    return [
        RuleResult(
            "tests.new_failures",
            "gate.tests.new_failures",
            level,
            f"{len(new)} tests fail now but did not in the baseline: {_names(new)}",
            file=_file_of(new[0]),
            value=len(new),
            priority=4,
        )
    ]


def _window(conn: Any, settings: Settings, before: str | None, size: int) -> list[Any]:
    bound = "AND id <= :before" if before is not None else ""
    return conn.rows(
        "SELECT id, git_commit, git_dirty FROM runs WHERE project = :project "
        f"{bound} ORDER BY id DESC LIMIT :size",
        project=settings.project_name,
        before=before,
        size=size,
    )


def _same_commit(conn: Any, commit_of: dict[str, str]) -> dict[str, str]:
    """Tests that both passed and failed on one commit, with the commits it happened on."""
    if not commit_of:
        return {}
    params: dict[str, Any] = {}
    # Grouped in the database: a window of runs can hold hundreds of thousands of tests.
    query = (
        "SELECT t.nodeid AS nodeid, r.git_commit AS git_commit FROM tests t "
        "JOIN runs r ON r.id = t.run_id WHERE t.run_id IN "
        + in_list("r", list(commit_of), params)
        + " GROUP BY t.nodeid, r.git_commit"
        " HAVING SUM(CASE WHEN t.outcome = 'passed' THEN 1 ELSE 0 END) > 0"
        " AND SUM(CASE WHEN t.outcome IN ('failed', 'error') THEN 1 ELSE 0 END) > 0"
        " ORDER BY t.nodeid, r.git_commit"
    )
    commits: dict[str, list[str]] = defaultdict(list)
    for row in conn.rows(query, **params):
        commits[row.nodeid].append(row.git_commit[:10])
    return {
        nodeid: f"both passed and failed on commit{'s' if len(found) > 1 else ''} "
        + ", ".join(found)
        for nodeid, found in commits.items()
    }


def _passed_on_rerun(conn: Any, run_ids: list[str]) -> dict[str, str]:
    """Tests whose last attempt passed after failed ones (pytest-rerunfailures)."""
    params: dict[str, Any] = {}
    query = (
        "SELECT nodeid, COUNT(*) AS runs, MAX(reruns) AS reruns FROM tests "
        "WHERE outcome = 'passed' AND reruns > 0 AND run_id IN "
        + in_list("r", run_ids, params)
        + " GROUP BY nodeid"
    )
    found = {}
    for row in conn.rows(query, **params):
        count = f"{row.reruns} rerun" + ("s" if row.reruns > 1 else "")
        found[row.nodeid] = "passed on rerun (" + (
            f"in {row.runs} runs, up to {count})" if row.runs > 1 else f"{count})"
        )
    return found


def flaky(settings: Settings, conn: Any, current_id: str | None) -> list[RuleResult]:
    level = settings.config.gate.tests.flaky
    if level == "off":
        return []
    window = _window(conn, settings, current_id, settings.config.gate.tests.flaky_window)
    commit_of = {r.id: r.git_commit for r in window if r.git_commit and not r.git_dirty}
    reasons: dict[str, list[str]] = defaultdict(list)
    for found in (_same_commit(conn, commit_of), _passed_on_rerun(conn, [r.id for r in window])):
        for nodeid, why in found.items():
            reasons[nodeid].append(why)
    if not reasons and not commit_of:
        return [
            RuleResult(
                "tests.flaky",
                "gate.tests.flaky",
                "info",
                f"no test passed on rerun in the last {len(window)} runs; none of them is "
                "from a clean git commit, so passing and failing on one commit was not judged",
            )
        ]
    if not reasons:
        return [
            RuleResult(
                "tests.flaky",
                "gate.tests.flaky",
                "pass",
                f"no flaky tests in the last {len(window)} runs "
                f"({len(set(commit_of.values()))} clean commits)",
            )
        ]
    return [
        RuleResult(
            f"tests.flaky.{nodeid}",
            "gate.tests.flaky",
            level,
            f"flaky: {nodeid} {'; '.join(why)} (last {len(window)} runs)",
            file=_file_of(nodeid),
            priority=45,
        )
        for nodeid, why in sorted(reasons.items())
    ]


def slow(
    settings: Settings, conn: Any, tests: list[TestRow], current_id: str | None
) -> list[RuleResult]:
    cfg = settings.config.gate.tests.slow
    if cfg.level == "off":
        return []
    bound = "AND id < :before" if current_id else ""
    prior = [
        r.id
        for r in conn.rows(
            f"SELECT id FROM runs WHERE project = :project {bound} ORDER BY id DESC LIMIT :size",
            project=settings.project_name,
            before=current_id,
            size=cfg.window,
        )
    ]
    samples: dict[str, list[float]] = defaultdict(list)
    if prior:
        params: dict[str, Any] = {}
        query = (
            "SELECT nodeid, duration FROM tests WHERE outcome = 'passed' AND run_id IN "
            + in_list("r", prior, params)
        )
        for row in conn.rows(query, **params):
            samples[row.nodeid].append(row.duration)
    judged = too_few = 0
    results = []
    for test in tests:
        if test.outcome != "passed":
            continue
        durations = samples.get(test.nodeid, [])
        if len(durations) < cfg.min_samples:
            too_few += 1
            continue
        judged += 1
        median = statistics.median(durations)
        if test.duration >= cfg.factor * median and test.duration - median >= cfg.floor:
            results.append(
                RuleResult(
                    f"tests.slow.{test.nodeid}",
                    "gate.tests.slow",
                    cfg.level,
                    f"slower: {test.nodeid} took {test.duration:.2f} s, "
                    f"{test.duration / median if median else float('inf'):.1f}x its median "
                    f"{median:.2f} s over {len(durations)} runs (factor {cfg.factor:g}, "
                    f"floor {cfg.floor:g} s)",
                    file=_file_of(test.nodeid),
                    value=test.duration,
                    threshold=median,
                    priority=50,
                )
            )
    note = (
        f"; {too_few} tests have fewer than {cfg.min_samples} prior samples: no verdict"
        if too_few
        else ""
    )
    if not results:
        severity = "pass" if judged else "info"
        results.append(
            RuleResult(
                "tests.slow",
                "gate.tests.slow",
                severity,
                f"no slower tests among {judged} judged{note}",
            )
        )
    elif note:
        results.append(RuleResult("tests.slow", "gate.tests.slow", "info", note[2:]))
    return results
