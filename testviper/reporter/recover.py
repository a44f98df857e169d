"""Rebuild history from a ReportPortal instance's launches, after the history was lost.

For every finished launch started in the window (``GET /launch``, paged, oldest first,
``filter.gt.startTime``), one run is rebuilt:

- id: the launch's ``run`` attribute (TestViper sets it as a system attribute); a launch
  without one gets a stable UUIDv7-shaped id from its start time and UUID, so importing
  it twice gives the same id and ids still sort by start time;
- status ``complete``; exit code 1 when the launch failed, 0 when it passed;
- start and end, ``git:commit``, ``git:branch`` and ``label`` from the launch;
- coverage: ``coverage:total`` and ``coverage:<component>`` are percentages only. The
  launch carries no statement counts and no per-file figures, so an imported run has
  ``cov_percent`` and component percentages but no counts (NULL for the run, 0 for
  components) and no ``file_coverage`` rows: patch coverage and per-file regressions
  cannot use it;
- tests: the launch's leaf items (``GET /item?filter.eq.launchId=``, paged). The node id
  comes back from ``codeRef`` and the item name; the outcome from the status (PASSED ->
  passed, FAILED -> failed, SKIPPED -> skipped, an interrupted/stopped/cancelled item ->
  error). The journal's finer outcomes do not survive the trip: ``error`` comes back as
  ``failed``, ``xfailed`` as ``skipped``, ``xpassed`` as ``passed``; failure messages and
  logs are not fetched. A test reported several times (reruns) keeps its last attempt.

A run already in history is skipped, so importing again adds nothing. The instance's
``deliveries`` row for an imported run says ``delivered`` with the launch's UUID.
Everything goes through ``api.Api``: there is one HTTP layer.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa

from testviper.config import Instance, Settings
from testviper.reporter.api import Api
from testviper.reporter.launch import NAMESPACE
from testviper.reporter.queries import PAGE_SIZE, _api, parse_time

ITEM_PAGE_SIZE = 300  # ReportPortal's largest page
OUTCOME = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped"}
BROKEN = {"INTERRUPTED", "STOPPED", "CANCELLED"}  # the test did not finish: an error


@dataclass
class ImportResult:
    instance: str
    imported: list[str] = field(default_factory=list)  # run ids
    skipped: list[str] = field(default_factory=list)  # already in history
    in_progress: int = 0  # launches not finished yet: left for a later import
    tests: int = 0


def _pages(api: Api, path: str, what: str, query: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every element of a paged listing, page by page."""
    page = 1
    while True:
        data = api.call("GET", f"{path}?{urlencode({**query, 'page.page': page})}", what)
        content = [x for x in data.get("content") or [] if isinstance(x, dict)]
        yield from content
        total_pages = (data.get("page") or {}).get("totalPages")
        if not content or not isinstance(total_pages, int) or page >= total_pages:
            return
        page += 1


def launches_since(api: Api, since: datetime) -> Iterator[dict[str, Any]]:
    """Launches started after ``since``, oldest first (new ones arriving do not shift pages)."""
    query = {
        "page.size": PAGE_SIZE,
        "page.sort": "startTime,asc",
        "filter.gt.startTime": str(int(since.timestamp() * 1000)),
    }
    return _pages(api, "/launch", "the launch list", query)


def launch_items(api: Api, launch_id: int) -> Iterator[dict[str, Any]]:
    query = {"filter.eq.launchId": launch_id, "page.size": ITEM_PAGE_SIZE, "page.sort": "id,asc"}
    return _pages(api, "/item", f"the items of launch {launch_id}", query)


def nodeid(code_ref: str | None, name: str) -> str:
    """The pytest node id of a leaf item, from ``launch.build_launch``'s codeRef and name.

    ``tests/m.py:TestC.test_f`` + ``test_f[1]`` -> ``tests/m.py::TestC::test_f[1]``;
    a codeRef without ``:`` is a module that failed to import: the node id is the path.
    """
    if not code_ref:
        return name
    path, sep, dotted = code_ref.partition(":")
    if not sep:
        return code_ref
    classes = dotted.split(".")[:-1]
    return "::".join((path, *classes, name))


def fallback_run_id(launch_uuid: str, start: datetime) -> str:
    """A UUIDv7-shaped id: the launch's start in ms, then bits derived from its UUID."""
    millis = int(start.timestamp() * 1000) & ((1 << 48) - 1)
    rand = uuid.uuid5(NAMESPACE, f"import/{launch_uuid}").int
    value = millis << 80 | 0x7 << 76 | ((rand >> 64) & 0xFFF) << 64 | 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def _naive(moment: datetime | None) -> datetime | None:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def _percent(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value <= 100.0 else None


def _run_id(attrs: dict[str, str], launch_uuid: str, start: datetime) -> str:
    given = attrs.get("run", "")
    try:
        return str(uuid.UUID(given))
    except ValueError:
        return fallback_run_id(launch_uuid, start)


def _tests(items: Iterator[dict[str, Any]]) -> list[Any]:
    from testviper.history.records import TestResult

    leaves = []
    for item in items:
        if item.get("hasChildren") or item.get("hasStats") is False or item.get("retry"):
            continue  # suites, nested steps without statistics, superseded retries
        status = str(item.get("status") or "")
        outcome = OUTCOME.get(status) or ("error" if status in BROKEN else None)
        if outcome is None:  # IN_PROGRESS or unknown: no result to keep
            continue
        start, end = parse_time(item.get("startTime")), parse_time(item.get("endTime"))
        markers, params = [], {}
        for attr in item.get("attributes") or []:
            if isinstance(attr, dict) and not attr.get("system"):
                markers.append(str(attr.get("key") or attr.get("value") or ""))
        for param in item.get("parameters") or []:
            if isinstance(param, dict) and param.get("key"):
                params[str(param["key"])] = str(param.get("value"))
        leaves.append(
            (
                start or datetime.min.replace(tzinfo=UTC),
                TestResult(
                    nodeid=nodeid(item.get("codeRef"), str(item.get("name") or "")),
                    outcome=outcome,
                    phase="call",
                    duration=max(0.0, (end - start).total_seconds()) if start and end else 0.0,
                    markers=[m for m in markers if m],
                    params=params,
                ),
            )
        )
    leaves.sort(key=lambda pair: pair[0])
    last = {test.nodeid: test for _, test in leaves}  # a rerun: its last attempt counts
    return list(last.values())


def _exists(history: Any, run_id: str) -> bool:
    from testviper.history import schema

    with history.engine.connect() as conn:
        found = conn.execute(sa.select(schema.runs.c.id).where(schema.runs.c.id == run_id))
        return found.first() is not None


def _save(history: Any, run: Any, total: float | None, components: dict[str, float]) -> None:
    """save_run, then the percent-only coverage; a failure of the second removes the run."""
    from testviper.history import schema
    from testviper.history.store import save_run

    save_run(history, run)
    try:
        with history.begin() as conn:
            if total is not None:
                conn.execute(
                    sa.update(schema.runs)
                    .where(schema.runs.c.id == run.id)
                    .values(cov_percent=total)
                )
            if components:
                conn.execute(
                    schema.component_coverage.insert(),
                    [
                        {
                            "run_id": run.id,
                            "component": name,
                            "files": 0,
                            "statements": 0,
                            "missing": 0,
                            "branches": 0,
                            "covered_branches": 0,
                            "percent": percent,
                        }
                        for name, percent in sorted(components.items())
                    ],
                )
    except BaseException:
        with history.begin() as conn:
            conn.execute(sa.delete(schema.runs).where(schema.runs.c.id == run.id))
        raise


def import_launches(
    settings: Settings,
    instance: Instance,
    since: timedelta,
    history: Any = None,
    now: datetime | None = None,
) -> ImportResult:
    """Rebuild the runs of ``instance``'s launches started within ``since`` of ``now``.

    Raises UserError (no key) and DeliveryError (the instance failed to answer).
    """
    from testviper.history.records import RunRecord
    from testviper.reporter import outbox
    from testviper.runner.run import connect

    history = history if history is not None else connect(settings)
    cutoff = (now or datetime.now(UTC)) - since
    result = ImportResult(instance.name)
    api = _api(settings, instance)
    try:
        for launch in launches_since(api, cutoff):
            start = parse_time(launch.get("startTime"))
            launch_uuid = str(launch.get("uuid") or "")
            if start is None or not launch_uuid or not isinstance(launch.get("id"), int):
                continue
            if str(launch.get("status") or "IN_PROGRESS") == "IN_PROGRESS":
                result.in_progress += 1
                continue
            attrs = {
                str(a.get("key") or ""): str(a.get("value") or "")
                for a in launch.get("attributes") or []
                if isinstance(a, dict)
            }
            run_id = _run_id(attrs, launch_uuid, start)
            if _exists(history, run_id):
                result.skipped.append(run_id)
                continue
            status = str(launch.get("status"))
            env = {k: attrs[f"git:{k}"] for k in ("commit", "branch") if attrs.get(f"git:{k}")}
            run = RunRecord(
                id=run_id,
                project=settings.project_name,
                label=attrs.get("label") or None,
                status="complete",
                exit_code={"PASSED": 0, "FAILED": 1}.get(status),
                started_at=_naive(start),  # type: ignore[arg-type]
                finished_at=_naive(parse_time(launch.get("endTime"))),
                command=[],
                run_dir="",
                environment={f"git_{k}": v for k, v in env.items()},
                tests=_tests(launch_items(api, launch["id"])),
            )
            components = {
                key.removeprefix("coverage:"): pct
                for key, value in attrs.items()
                if key.startswith("coverage:") and key != "coverage:total"
                if (pct := _percent(value)) is not None
            }
            _save(history, run, _percent(attrs.get("coverage:total", "")), components)
            outbox.record(
                history, outbox.Entry(run_id, instance.name, launch_uuid, status="delivered")
            )
            result.imported.append(run_id)
            result.tests += len(run.tests)
    finally:
        api.close()
    return result
