"""Turn a run journal into the ReportPortal launch it should become, before any I/O.

Every launch, item and log gets a UUID derived from the run id, the instance name and
the entity's place in the tree (uuid5). The whole launch is therefore known up front:
a retry, a replay from the outbox or a resumed half-delivery sends the same UUIDs,
and the server's unique UUID columns make duplicates impossible.

The tree follows the official pytest agent with its directory and code hierarchy on:
one SUITE per directory, module and class, each test a STEP with ``codeRef``,
``testCaseId``, parameters and markers as attributes. No child starts before its
parent and a suite ends with its last test: the server would reject a child starting
earlier (or, on the v2 API, silently drop it).
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
    # "INTERRUPTED" when pytest stopped the session early (its exit status 2: Ctrl-C,
    # pytest.exit, collection errors); otherwise the server derives it from the items.
    status: str | None = None

    @property
    def leaves(self) -> list[Item]:
        return [i for i in self.items if i.type == "STEP"]


def derived_uuid(run_id: str, instance: str, *path: str) -> str:
    """The stable UUID of one entity of one run's launch on one instance."""
    return str(uuid.uuid5(NAMESPACE, "/".join((run_id, instance, *path))))


def attribute(key: str | None, value: object) -> dict[str, str]:
    text = str(value).strip() or "-"  # the server rejects a blank value (HTTP 400)
    return {"key": key, "value": text} if key else {"value": text}


class LaunchBuilder:
    """Builds a launch one journal event at a time, in journal order.

    The post-run delivery feeds it the whole journal, the live stream feeds it each line
    as pytest writes it: both see the events in the same order, so both build the same
    items with the same UUIDs and times, and either can finish what the other started.
    A suite starts with the first of its tests in the journal; a child that started
    earlier (xdist reports tests in finishing order) is shown starting with its parent,
    so no child ever starts before its parent, whoever sends it.
    """

    def __init__(
        self,
        run_id: str,
        instance: str,
        name: str,
        *,
        description: str = "",
        attributes: list[dict[str, Any]] | None = None,
        skipped_is_issue: bool = False,
    ) -> None:
        self.run_id, self.instance, self.skipped_is_issue = run_id, instance, skipped_is_issue
        self.launch = Launch(
            uuid=derived_uuid(run_id, instance, "launch"),
            name=name,
            description=description,
            attributes=list(attributes or []),
            start=0.0,
            end=0.0,
            items=[],
        )
        self.suites: dict[tuple[str, ...], Item] = {}
        self.seen: dict[str, int] = {}
        self.timed = False  # launch.start/end hold a real time yet

    def add(self, event: Mapping[str, Any]) -> list[Item]:
        """Take one journal event; return the items it creates (parents first)."""
        kind = event.get("event")
        if kind == "session_start" and isinstance(event.get("time"), int | float):
            self._widen(float(event["time"]), float(event["time"]))
            return []
        if kind == "session_finish":
            self.launch.status = "INTERRUPTED" if event.get("exitstatus") == 2 else None
            return []
        if kind != "test":
            return []
        new: list[Item] = []
        path, classes, test_name = split_nodeid(event["nodeid"])
        parent: Item | None = None
        ancestors: list[Item] = []
        for depth in range(1, len(path) + len(classes) + 1):
            key = (*path, *classes)[:depth]
            suite = self.suites.get(key)
            if suite is None:
                start = max(event["start"], parent.start) if parent else event["start"]
                suite = Item(
                    uuid=derived_uuid(self.run_id, self.instance, "suite", *key),
                    parent_uuid=parent.uuid if parent else None,
                    type="SUITE",
                    name=key[-1],
                    start=start,
                    end=start,
                    code_ref="/".join(key[: len(path)])
                    + (":" + ".".join(key[len(path) :]) if depth > len(path) else ""),
                )
                self.suites[key] = suite
                new.append(suite)
            ancestors.append(suite)
            parent = suite
        # A test reported twice (reruns) gets a distinct item for each attempt.
        attempt = self.seen[event["nodeid"]] = self.seen.get(event["nodeid"], -1) + 1
        step = _step(
            self.run_id,
            self.instance,
            event,
            test_name,
            classes,
            path,
            parent,
            attempt,
            self.skipped_is_issue,
        )
        new.append(step)
        for suite in ancestors:
            suite.end = max(suite.end, step.end)
        self.launch.items.extend(new)
        self._widen(new[0].start, step.end)
        return new

    def _widen(self, start: float, end: float) -> None:
        """The launch spans the session and every item."""
        launch = self.launch
        launch.start = min(launch.start, start) if self.timed else start
        launch.end = max(launch.end, end) if self.timed else end
        self.timed = True


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
    """The launch for one run on one instance, from the journal's events.

    ``attributes`` are the launch's (configured ones, coverage, git). Skipped tests get
    no "To Investigate" defect unless ``skipped_is_issue``.
    """
    builder = LaunchBuilder(
        run_id,
        instance,
        name,
        description=description,
        attributes=attributes,
        skipped_is_issue=skipped_is_issue,
    )
    for event in events:
        builder.add(event)
    return builder.launch


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
    start = max(event["start"], parent.start) if parent else event["start"]
    step = Item(
        uuid=derived_uuid(run_id, instance, "test", nodeid, str(attempt)),
        parent_uuid=parent.uuid if parent else None,
        type="STEP",
        name=test_name,
        start=start,
        end=max(event["stop"], start),
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
