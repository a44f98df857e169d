"""The gate's outputs: text summary, JSON, JUnit XML, GitHub annotations and step summary.

JSON schema (``schema_version`` 1; keys are only ever added, never renamed)::

    {
      "schema_version": 1,
      "status": "pass" | "warn" | "fail",
      "exit_code": 0 | 1,
      "subject": {"kind": "run" | "coverage_file", "run_id", "path", "git_branch", "git_commit"},
      "coverage": {"percent", "statements", "missing", "branches", "covered_branches",
                   "components": {name: {"files", "percent", "statements", "missing",
                                         "branches", "covered_branches"}}} | null,
      "baseline": {"mode", "description", "run_ids": [...], "coverage_percent"} | null,
      "patch": {"base", "merge_base", "changed_files", "measured_lines", "covered_lines",
                "percent", "files": [{"path", "measured_lines", "covered_lines",
                                      "percent", "uncovered": "3-5,9"}]} | null,
      "summary": {"fail": n, "warn": n, "info": n, "pass": n},
      "results": [{"rule", "key", "severity", "message", "file", "line", "end_line",
                   "value", "threshold"}],   # most important first
      "notes": [str]
    }
"""

import json
from pathlib import Path
from typing import Any

from testviper.fsutil import atomic_write
from testviper.gating.results import Verdict

SCHEMA_VERSION = 1
GITHUB_LIMIT = 10  # annotations of each type GitHub shows per step
SUMMARY_ROWS = 200  # the step summary stays far below GitHub's 1 MiB
LABEL = {"fail": "FAIL", "warn": "WARN", "info": "info", "pass": "pass"}


def to_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": verdict.status,
        "exit_code": verdict.exit_code,
        "subject": verdict.subject,
        "coverage": verdict.coverage,
        "baseline": verdict.baseline,
        "patch": verdict.patch,
        "summary": {s: verdict.count(s) for s in ("fail", "warn", "info", "pass")},
        "results": [r.as_dict() for r in verdict.ordered()],
        "notes": verdict.notes,
    }


def write_json(verdict: Verdict, path: Path) -> None:
    atomic_write(path, json.dumps(to_json(verdict), indent=2) + "\n")


def headline(verdict: Verdict) -> str:
    s = verdict.subject
    kind = "run" if s.get("kind") == "run" else "coverage file"
    what = f"{kind} {s.get('run_id') if kind == 'run' else s.get('path')}"
    if s.get("git_branch") or s.get("git_commit"):
        what += f" on {s.get('git_branch') or '?'}@{(s.get('git_commit') or '?')[:10]}"
    counts = ", ".join(
        f"{verdict.count(sev)} {name}"
        for sev, name in (("fail", "failed"), ("warn", "warnings"), ("pass", "passed"))
    )
    return f"TestViper gate: {verdict.status.upper()} ({counts}) for {what}"


def _where(r: Any) -> str:
    if not r.file:
        return ""
    if r.line is None:
        return f" at {r.file}"
    if r.end_line and r.end_line != r.line:
        return f" at {r.file}:{r.line}-{r.end_line}"
    return f" at {r.file}:{r.line}"


def text(verdict: Verdict, quiet: bool = False) -> str:
    """The human summary; ``quiet`` keeps only failures and warnings (nothing on a pass)."""
    lines = []
    shown = 0
    for r in verdict.ordered():
        if quiet and r.severity not in ("fail", "warn"):
            continue
        if r.rule.startswith("patch.uncovered.") and r.severity == "info":
            continue  # listed in the patch result and the JSON; too many to print
        if r.rule.startswith("patch.uncovered.") and shown >= 20:
            continue
        shown += r.rule.startswith("patch.uncovered.")
        lines.append(f"  {LABEL[r.severity]:<4}  {r.message}{_where(r)}  [{r.key}]")
    if quiet and not lines:
        return ""
    notes = [f"  note: {n}" for n in verdict.notes]
    if quiet:
        return "\n".join([headline(verdict), *lines])
    return "\n".join([headline(verdict), *lines, *notes])


def junit(verdict: Verdict) -> str:
    """Each rule a testcase: fail -> <failure>, warn/info -> passed with the message."""
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="testviper.gate",
        tests=str(len(verdict.results)),
        failures=str(verdict.count("fail")),
        errors="0",
        skipped="0",
    )
    for r in verdict.ordered():
        group = r.rule.split(".", 1)[0]
        case = ET.SubElement(suite, "testcase", classname=f"gate.{group}", name=r.rule)
        if r.file:
            case.set("file", r.file)
            if r.line:
                case.set("line", str(r.line))
        if r.severity == "fail":
            failure = ET.SubElement(case, "failure", message=r.message, type=r.key)
            failure.text = f"{r.message}{_where(r)} [{r.key}]"
        else:
            out = ET.SubElement(case, "system-out")
            out.text = f"{r.severity.upper()}: {r.message}{_where(r)} [{r.key}]"
    root = ET.Element("testsuites", name="testviper", tests=suite.get("tests", "0"))
    root.set("failures", suite.get("failures", "0"))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(verdict: Verdict, path: Path) -> None:
    atomic_write(path, junit(verdict))


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(verdict: Verdict, limit: int = GITHUB_LIMIT, prefix: str = "") -> list[str]:
    """``::error``/``::warning`` lines, most important first, within GitHub's limits.

    GitHub shows at most ``limit`` annotations of each type per step and drops the rest
    silently, so when there are more, the last slot holds a line counting the others.
    ``prefix`` is the project root relative to the repository root (``$GITHUB_WORKSPACE``),
    since GitHub resolves annotation files from there.
    """
    out = []
    for severity, command in (("fail", "error"), ("warn", "warning")):
        picked = [r for r in verdict.ordered() if r.severity == severity]
        shown = picked if len(picked) <= limit else picked[: limit - 1]
        for r in shown:
            props = []
            if r.file:
                props.append(f"file={_escape_property(prefix + r.file)}")
                if r.line:
                    props.append(f"line={r.line}")
                    if r.end_line and r.end_line != r.line:
                        props.append(f"endLine={r.end_line}")
            props.append(f"title={_escape_property(f'testviper gate: {r.key}')}")
            out.append(f"::{command} {','.join(props)}::{_escape_data(r.message)}")
        if len(picked) > len(shown):
            rest = len(picked) - len(shown)
            word = "failures" if severity == "fail" else "warnings"
            out.append(
                f"::{command} title=testviper gate::{rest} more gate {word} not annotated; "
                "see the job summary or the --json output"
            )
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def step_summary(verdict: Verdict) -> str:
    """A Markdown section for ``$GITHUB_STEP_SUMMARY``."""
    icon = {"fail": ":x:", "warn": ":warning:", "pass": ":white_check_mark:", "info": ":memo:"}
    lines = [f"### {headline(verdict)}", ""]
    if verdict.coverage and verdict.coverage.get("percent") is not None:
        lines += [f"Total coverage: **{verdict.coverage['percent']:.2f} %**", ""]
    lines += ["| | Rule | Result | Where | Config key |", "|---|---|---|---|---|"]
    rows = [
        r
        for r in verdict.ordered()
        if not (r.rule.startswith("patch.uncovered.") and r.severity == "info")
    ]
    for r in rows[:SUMMARY_ROWS]:
        where = _where(r).removeprefix(" at ")
        lines.append(
            f"| {icon[r.severity]} | {_cell(r.rule)} | {_cell(r.message)} | "
            f"{_cell(where)} | `{r.key}` |"
        )
    if len(rows) > SUMMARY_ROWS:
        lines.append(f"\n{len(rows) - SUMMARY_ROWS} more results in the --json output.")
    for note in verdict.notes:
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n\n"
