"""Patch coverage: coverage of the lines added or changed since a git base.

Like diff-cover: the diff is taken from the merge base of ``--base`` and HEAD to the
working tree (committed, staged and unstaged changes to tracked files), renames are
followed, and only lines the coverage data knows as statements count. A change touching
no measurable line passes with a note.
"""

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testviper.config import Settings
from testviper.coverage_data import CoverageData, to_ranges
from testviper.errors import UserError
from testviper.gating.results import RuleResult, level_severity, pct

HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-c", "core.quotePath=false", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            env={**os.environ, "GIT_PAGER": "cat", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise UserError("--base: git is not installed (patch coverage needs it)") from None
    except subprocess.TimeoutExpired:
        raise UserError("--base: git diff took more than 120 s") from None


def _unquote(path: str) -> str:
    if path.startswith('"') and path.endswith('"'):
        body = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        return body.encode("latin-1").decode("utf-8", "replace")
    return path


def parse_diff(text: str) -> dict[str, set[int]]:
    """Added/changed line numbers per new path, from a ``git diff -U0`` output."""
    changed: dict[str, set[int]] = {}
    current: set[int] | None = None
    for line in text.splitlines():
        if line.startswith("+++ "):
            target = _unquote(line[4:].rstrip("\t"))
            if target == "/dev/null":
                current = None  # a deleted file: nothing left to cover
            else:
                current = changed.setdefault(target.removeprefix("b/"), set())
        elif line.startswith("@@") and current is not None:
            match = HUNK.match(line)
            if match:
                start, count = int(match.group(1)), int(match.group(2) or 1)
                current.update(range(start, start + count))
    return changed


@dataclass
class Diff:
    base: str
    merge_base: str
    toplevel: Path
    changed: dict[str, set[int]]  # path relative to the project root -> lines
    head: str = ""


def git_diff(root: Path, base: str) -> Diff:
    """The lines changed between the merge base of ``base`` and HEAD and the work tree."""
    if not base or base.startswith("-"):
        raise UserError(f"--base '{base}': not a git commit, branch or tag")
    top = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    if top.returncode != 0:
        if "not a git repository" in top.stderr:
            raise UserError(f"--base {base}: {root} is not inside a git repository")
        raise UserError(f"--base {base}: the repository has no commit yet (no HEAD)")
    toplevel_text, head = top.stdout.split("\n")[:2]
    toplevel = Path(toplevel_text).resolve()
    # One call in the usual case; the error path finds out which of the two went wrong.
    mb = _git(root, "merge-base", base, "HEAD")
    if mb.returncode != 0:
        ref = _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
        if ref.returncode != 0:
            raise UserError(
                f"--base {base}: not a git commit, branch or tag in {toplevel} "
                "(in CI, fetch it first: `git fetch origin main`)"
            )
        raise UserError(f"--base {base}: no common ancestor with HEAD; cannot compute a patch")
    merge_base = mb.stdout.strip()
    diff = _git(
        root,
        "diff",
        "--find-renames",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--diff-filter=AMRC",
        merge_base,
        "--",
    )
    if diff.returncode != 0:
        raise UserError(f"--base {base}: git diff failed: {diff.stderr.strip()[:200]}")
    changed = {}
    for path, lines in parse_diff(diff.stdout).items():
        absolute = toplevel / path
        try:
            rel = str(absolute.relative_to(root.resolve()))
        except ValueError:
            continue  # outside the project
        changed[rel] = lines
    return Diff(base, merge_base, toplevel, changed, head.strip())


def patch_coverage(
    settings: Settings, data: CoverageData, diff: Diff
) -> tuple[list[RuleResult], dict[str, Any]]:
    cfg = settings.config.gate.patch
    by_path = {f.path: f for f in data.files}
    measured = covered = 0
    per_file = []
    uncovered_results = []
    for path in sorted(diff.changed):
        f = by_path.get(path)
        if f is None:
            continue
        lines = diff.changed[path]
        hit = lines.intersection(f.executed_lines)
        miss = lines.intersection(f.missing_lines)
        if not hit and not miss:
            continue
        measured += len(hit) + len(miss)
        covered += len(hit)
        per_file.append(
            {
                "path": path,
                "measured_lines": len(hit) + len(miss),
                "covered_lines": len(hit),
                "percent": 100.0 * len(hit) / (len(hit) + len(miss)),
                "uncovered": to_ranges(miss),
            }
        )
        for part in filter(None, to_ranges(miss).split(",")):
            low, _, high = part.partition("-")
            uncovered_results.append((path, int(low), int(high or low)))
    percent = 100.0 * covered / measured if measured else None
    summary = {
        "base": diff.base,
        "merge_base": diff.merge_base,
        "changed_files": len(diff.changed),
        "measured_lines": measured,
        "covered_lines": covered,
        "percent": percent,
        "files": per_file,
    }
    where = f"since {diff.base} (merge base {diff.merge_base[:10]})"
    if percent is None:
        changed = f"the {len(diff.changed)} changed files" if diff.changed else "no file changed"
        message = f"patch coverage: {changed} {where}: no measurable line changed; nothing to judge"
        return [RuleResult("patch.coverage", "gate.patch", "pass", message, priority=20)], summary
    if measured < cfg.min_lines:
        message = (
            f"patch coverage {pct(percent)} on {measured} changed lines {where}: fewer than "
            f"min_lines {cfg.min_lines}, not judged"
        )
        result = RuleResult(
            "patch.coverage", "gate.patch.min_lines", "pass", message, value=percent
        )
        return [result], summary
    severity = level_severity(percent, cfg.fail_under, cfg.warn_under)
    lines_text = f"{covered}/{measured} changed lines covered {where}"
    if severity == "pass":
        set_limits = [
            f"{n} {v:g}"
            for n, v in (("fail_under", cfg.fail_under), ("warn_under", cfg.warn_under))
            if v is not None
        ]
        meets = f"meets {' and '.join(set_limits)}" if set_limits else "no threshold set"
        results = [
            RuleResult(
                "patch.coverage",
                "gate.patch",
                "pass" if set_limits else "info",
                f"patch coverage {pct(percent)} ({lines_text}) {meets}",
                value=percent,
                priority=20,
            )
        ]
        line_severity = "info"
    else:
        name = "fail_under" if severity == "fail" else "warn_under"
        limit = cfg.fail_under if severity == "fail" else cfg.warn_under
        assert limit is not None
        worst = sorted(per_file, key=lambda p: p["covered_lines"] - p["measured_lines"])[:3]
        files_text = "; ".join(f"{p['path']}: {p['uncovered']}" for p in worst)
        results = [
            RuleResult(
                "patch.coverage",
                f"gate.patch.{name}",
                severity,
                f"patch coverage {pct(percent)} is {limit - percent:.2f} pp under {name} "
                f"{limit:g} ({lines_text}); uncovered: {files_text}",
                value=percent,
                threshold=limit,
                priority=20,
            )
        ]
        line_severity = severity
    for path, low, high in uncovered_results:
        span = f"lines {low}-{high}" if high != low else f"line {low}"
        results.append(
            RuleResult(
                f"patch.uncovered.{path}:{low}",
                "gate.patch",
                line_severity,
                f"changed {span} not covered by tests",
                file=path,
                line=low,
                end_line=high,
                priority=60,
            )
        )
    return results, summary
