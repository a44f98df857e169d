"""Turn a run journal into the ReportPortal launch it should become, before any I/O.

Every launch, item and log gets a UUID derived from the run id, the instance name and
the entity's place in the tree (uuid5). The whole launch is therefore known up front:
a retry, a replay from the outbox or a resumed half-delivery sends the same UUIDs,
and the server's unique UUID columns make duplicates impossible.

The tree follows the official pytest agent with its directory and code hierarchy on:
one SUITE per directory, module and class, each test a STEP with ``codeRef``,
``testCaseId``, parameters and markers as attributes. A suite spans the times of its
tests, so no child starts before its parent: the server would reject that (or, on the
v2 API, silently drop the item).
"""

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Fixed namespace for TestViper's derived UUIDs (uuid5 needs one; any constant works).
NAMESPACE = uuid.UUID("6a0b7c1e-8f3d-5b2a-9c4e-7d1f0a2b3c4d")

# pytest outcome -> ReportPortal status of the leaf item.
STATUS = {
    "passed": "PASSED",
    "xpassed": "PASSED",
    "failed": "FAILED",
    "error": "FAILED",
    "skipped": "SKIPPED",
    "xfailed": "SKIPPED",
}
# Markers that describe how pytest runs a test, not what it is: no attribute for them.
HIDDEN_MARKERS = {"parametrize", "usefixtures", "filterwarnings", "name"}


@dataclass(frozen=True)
class Log:
    uuid: str
    item_uuid: str
    time: float
    level: str
    message: str


@dataclass
class Item:
    uuid: str
    parent_uuid: str | None
    type: str
    name: str
    start: float
    end: float
    code_ref: str | None = None
    test_case_id: str | None = None
    parameters: list[dict[str, str]] = field(default_factory=list)
    attributes: list[dict[str, str]] = field(default_factory=list)
    status: str | None = None  # None for suites: the server computes theirs
    issue: dict[str, str] | None = None
    logs: list[Log] = field(default_factory=list)


@dataclass
class Launch:
    uuid: str
    name: str
    description: str
    attributes: list[dict[str, Any]]
    start: float
    end: float
    items: list[Item]  # parents always before their children

    @property
    def leaves(self) -> list[Item]:
        return [i for i in self.items if i.type == "STEP"]


def derived_uuid(run_id: str, instance: str, *path: str) -> str:
    """The stable UUID of one entity of one run's launch on one instance."""
    return str(uuid.uuid5(NAMESPACE, "/".join((run_id, instance, *path))))


def attribute(key: str | None, value: object) -> dict[str, str]:
    text = str(value).strip() or "-"  # the server rejects a blank value (HTTP 400)
    return {"key": key, "value": text} if key else {"value": text}


def build_launch(
    run_id: str,
    instance: str,
    name: str,
    events: Iterable[Mapping[str, Any]],
    *,
    description: str = "",
    attributes: list[dict[str, Any]] | None = None,
    skipped_is_issue: bool = False,
) -> Launch:
    """The launch for one run on one instance, from the journal's ``test`` events.

    ``attributes`` are the launch's (configured ones, coverage, git). Skipped tests get
    no "To Investigate" defect unless ``skipped_is_issue``.
    """
    tests = [e for e in events if e.get("event") == "test"]
    suites: dict[tuple[str, ...], Item] = {}
    items: list[Item] = []
    seen: dict[str, int] = {}
    for event in tests:
        path, classes, test_name = split_nodeid(event["nodeid"])
        parent: Item | None = None
        for depth in range(1, len(path) + len(classes) + 1):
            key = (*path, *classes)[:depth]
            suite = suites.get(key)
            if suite is None:
                suite = Item(
                    uuid=derived_uuid(run_id, instance, "suite", *key),
                    parent_uuid=parent.uuid if parent else None,
                    type="SUITE",
                    name=key[-1],
                    start=event["start"],
                    end=event["stop"],
                    code_ref="/".join(key[: len(path)])
                    + (":" + ".".join(key[len(path) :]) if depth > len(path) else ""),
                )
                suites[key] = suite
                items.append(suite)
            suite.start = min(suite.start, event["start"])
            suite.end = max(suite.end, event["stop"])
            parent = suite
        # A test reported twice (reruns) gets a distinct item for each attempt.
        attempt = seen[event["nodeid"]] = seen.get(event["nodeid"], -1) + 1
        items.append(
            _step(
                run_id, instance, event, test_name, classes, path, parent, attempt, skipped_is_issue
            )
        )
    start = min((i.start for i in items), default=0.0)
    end = max((i.end for i in items), default=start)
    return Launch(
        uuid=derived_uuid(run_id, instance, "launch"),
        name=name,
        description=description,
        attributes=list(attributes or []),
        start=start,
        end=end,
        items=items,
    )


def split_nodeid(nodeid: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """Directory/module path, classes and test name of a pytest node id.

    ``tests/pkg/test_m.py::TestC::test_f[1]`` ->
    ``(("tests", "pkg", "test_m.py"), ("TestC",), "test_f[1]")``.
    """
    file_part, *rest = nodeid.split("::")
    path = tuple(p for p in file_part.split("/") if p)
    if not rest:  # a collection error of a whole module
        return path[:-1], (), path[-1] if path else nodeid
    return path, tuple(rest[:-1]), rest[-1]


def _step(
    run_id: str,
    instance: str,
    event: Mapping[str, Any],
    test_name: str,
    classes: tuple[str, ...],
    path: tuple[str, ...],
    parent: Item | None,
    attempt: int,
    skipped_is_issue: bool,
) -> Item:
    nodeid = event["nodeid"]
    if "::" in nodeid:
        code_ref = "/".join(path) + ":" + ".".join((*classes, test_name.split("[", 1)[0]))
    else:  # a module that failed to import: the module is the test
        code_ref = "/".join((*path, test_name))
    params = event.get("params") or {}
    test_case_id = code_ref + (f"[{','.join(str(v) for v in params.values())}]" if params else "")
    values = event.get("marker_values") or {}
    attributes = [
        attribute(m, values[m]) if m in values else attribute(None, m)
        for m in event.get("markers") or []
        if m not in HIDDEN_MARKERS
    ]
    status = STATUS[event["outcome"]]
    step = Item(
        uuid=derived_uuid(run_id, instance, "test", nodeid, str(attempt)),
        parent_uuid=parent.uuid if parent else None,
        type="STEP",
        name=test_name,
        start=event["start"],
        end=max(event["stop"], event["start"]),
        code_ref=code_ref,
        test_case_id=test_case_id,
        parameters=[{"key": k, "value": str(v)} for k, v in params.items()],
        attributes=attributes,
        status=status,
        issue={"issueType": "NOT_ISSUE"} if status == "SKIPPED" and not skipped_is_issue else None,
    )
    texts = [
        ("INFO", "captured log", event.get("log")),
        ("INFO", "captured stdout", event.get("stdout")),
        ("WARN", "captured stderr", event.get("stderr")),
        ("ERROR" if status == "FAILED" else "INFO", None, event.get("longrepr")),
    ]
    for n, (level, title, text) in enumerate((t for t in texts if t[2]), 1):
        step.logs.append(
            Log(
                uuid=derived_uuid(run_id, instance, "log", nodeid, str(attempt), str(n)),
                item_uuid=step.uuid,
                time=step.end,
                level=level,
                message=f"{title}:\n{text}" if title else text,
            )
        )
    return step
