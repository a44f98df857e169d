"""Threshold rules: overall, per component, per file glob.

Percentages are coverage.py's combined figure, (covered lines + covered branches) /
(statements + branches), computed from summed counts: never a mean of percentages. A
component or file rule that matches no file in the coverage data is a configuration
error (exit 2), not a silent pass.
"""

import re

from testviper.config import Level, Settings
from testviper.coverage_data import Counts, CoverageData, include_matcher
from testviper.errors import UserError
from testviper.gating.results import RuleResult, level_severity, pct


def glob_matcher(pattern: str) -> re.Pattern[str]:
    """A regex for absolute paths with coverage.py's ``--include`` rules for one glob."""
    from coverage.exceptions import ConfigError

    try:
        return include_matcher([pattern])
    except ConfigError as exc:
        raise UserError(f"thresholds.files: '{pattern}': {exc}") from None


def describe_counts(c: Counts) -> str:
    text = f"{c.statements - c.missing}/{c.statements} lines"
    if c.branches:
        text += f", {c.covered_branches}/{c.branches} branches"
    return text


def _judge(
    rule: str, key: str, what: str, counts: Counts, level: Level, priority: int, **where: object
) -> RuleResult:
    value = counts.percent
    if value is None:
        return RuleResult(rule, key, "info", f"{what}: no measurable statements", **where)
    severity = level_severity(value, level.fail_under, level.warn_under)
    if severity == "pass":
        limits = [
            f"{name} {limit:g}"
            for name, limit in (("fail_under", level.fail_under), ("warn_under", level.warn_under))
            if limit is not None
        ]
        if not limits:
            message = f"{what} is {pct(value)} ({describe_counts(counts)}); no threshold set"
            return RuleResult(rule, key, "info", message, value=value, **where)
        message = f"{what} {pct(value)} meets {' and '.join(limits)}"
        return RuleResult(rule, key, "pass", message, value=value, priority=priority, **where)
    limit = level.fail_under if severity == "fail" else level.warn_under
    assert limit is not None
    name = "fail_under" if severity == "fail" else "warn_under"
    message = (
        f"{what} {pct(value)} is {limit - value:.2f} pp under {name} {limit:g} "
        f"({describe_counts(counts)})"
    )
    return RuleResult(
        rule,
        f"{key}.{name}",
        severity,
        message,
        value=value,
        threshold=limit,
        priority=priority,
        **where,  # type: ignore[arg-type]
    )


def component_counts(
    settings: Settings, data: CoverageData, stored: dict[str, tuple[int, Counts]] | None = None
) -> dict[str, tuple[int, Counts, re.Pattern[str] | None]]:
    """Files and counts per configured component.

    ``stored`` (a run's totals from ingest) is used when it covers every configured
    component, which saves loading coverage.py's matchers; otherwise they are computed.
    """
    if stored and set(settings.config.components) <= set(stored):
        return {name: (*stored[name], None) for name in settings.config.components}
    out: dict[str, tuple[int, Counts, re.Pattern[str] | None]] = {}
    for name in settings.config.components:
        matcher = include_matcher(settings.component_globs(name))
        n, counts = data.component(matcher, settings.root)
        out[name] = (n, counts, matcher)
    return out


def check_components_match(
    settings: Settings,
    components: dict[str, tuple[int, Counts, re.Pattern[str] | None]],
    source: str,
) -> None:
    """A report in which no file belongs to any component comes from another project."""
    if components and not any(n for n, _, _ in components.values()):
        sample = ", ".join(sorted(components))
        raise UserError(
            f"{source}: no file in the coverage data belongs to any component ({sample}); "
            "is it from another project or machine? Map its paths with coverage.paths"
        )
    for name in settings.config.thresholds.components:
        if components.get(name, (0,))[0] == 0:
            raise UserError(
                f"thresholds.components.{name}: the component's source matches no file in "
                f"the coverage data ({source})"
            )


def overall(settings: Settings, data: CoverageData) -> RuleResult:
    totals = data.totals
    what = "total coverage" + (" (lines + branches)" if totals.branches else "")
    return _judge(
        "coverage.overall",
        "thresholds.overall",
        what,
        totals,
        settings.config.thresholds.overall,
        0,
    )


def components(
    settings: Settings, counts: dict[str, tuple[int, Counts, re.Pattern[str] | None]]
) -> list[RuleResult]:
    results = []
    for name, level in settings.config.thresholds.components.items():
        n, c, _ = counts[name]
        results.append(
            _judge(
                f"coverage.component.{name}",
                f"thresholds.components.{name}",
                f"component {name} ({n} files)",
                c,
                level,
                10,
            )
        )
    return results


def files(settings: Settings, data: CoverageData, source: str) -> list[RuleResult]:
    """Every file matching a ``thresholds.files`` glob must reach that glob's minimum."""
    results = []
    root = settings.root
    for pattern, minimum in settings.config.thresholds.files.items():
        level = minimum if isinstance(minimum, Level) else Level(fail_under=minimum)
        matcher = glob_matcher(str(root / pattern))
        matched = [f for f in data.files if matcher.match(str(root / f.path))]
        if not matched:
            raise UserError(
                f"thresholds.files.'{pattern}': the pattern matches no file in the coverage "
                f"data ({source}); fix the glob (relative to {root})"
            )
        key = f"thresholds.files.'{pattern}'"
        bad = 0
        for f in matched:
            result = _judge("coverage.file", key, f"file {f.path}", f.counts, level, 30)
            if result.severity in ("fail", "warn"):
                first = f.missing_lines[0] if f.missing_lines else None
                results.append(
                    RuleResult(
                        f"coverage.file.{f.path}",
                        result.key,
                        result.severity,
                        result.message,
                        file=f.path,
                        line=first,
                        value=result.value,
                        threshold=result.threshold,
                        priority=30,
                    )
                )
                bad += 1
        if not bad:
            limits = level.fail_under if level.fail_under is not None else level.warn_under
            meets = f"their minimum {limits:g}" if limits is not None else "no set minimum"
            results.append(
                RuleResult(
                    f"coverage.files.{pattern}",
                    key,
                    "pass" if limits is not None else "info",
                    f"all {len(matched)} files matching '{pattern}' meet {meets}",
                    priority=30,
                )
            )
    return results
