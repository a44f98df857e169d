"""The ReportPortal test server behaves like RP 5.15 for the real client, raw HTTP and the agent."""

import os
import subprocess
import sys
import textwrap
import time
import uuid as uuidlib
from datetime import UTC, datetime, timedelta

import pytest
import reportportal_client.client
import requests
from reportportal_client import ClientType, RPClient, create_client
from rp_server import RPServer, parse_time

KEY = "good-key"
PROJECT = "proj"
T0 = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_analytics(monkeypatch):
    monkeypatch.setenv("AGENT_NO_ANALYTICS", "1")
    # RPClient.finish_launch sleeps 3 s "to let the server pick up logs"; not needed here.
    monkeypatch.setattr(reportportal_client.client, "sleep", lambda _s: None)


@pytest.fixture
def rp():
    with RPServer(api_keys={KEY}, projects={PROJECT}) as server:
        yield server


def ts(seconds: float = 0) -> str:
    """Epoch-ms string T0 + seconds."""
    return str(int((T0 + timedelta(seconds=seconds)).timestamp() * 1000))


class Raw:
    """Thin raw-HTTP helper for one API version."""

    def __init__(self, rp: RPServer, api: str = "v1", key: str | None = KEY, project=PROJECT):
        self.base = f"{rp.url}/api/{api}/{project}"
        self.s = requests.Session()
        if key is not None:
            self.s.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, body=None, **kw) -> requests.Response:
        return self.s.request(method, f"{self.base}/{path}", json=body, timeout=5, **kw)

    def launch(self, name="L", start=None, **extra) -> str:
        start = ts() if start is None else start
        r = self.call("POST", "launch", {"name": name, "startTime": start, **extra})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def item(self, launch, name="t", start=None, parent=None, type_="STEP", **extra) -> str:
        start = ts(1) if start is None else start
        body = {"name": name, "startTime": start, "type": type_, "launchUuid": launch, **extra}
        r = self.call("POST", f"item/{parent}" if parent else "item", body)
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def finish_item(self, launch, item, status="PASSED", end="T+5", **extra) -> requests.Response:
        end = ts(5) if end == "T+5" else end
        body = {"endTime": end, "status": status, "launchUuid": launch, **extra}
        return self.call("PUT", f"item/{item}", body)

    def finish_launch(self, launch, end=None, **extra) -> requests.Response:
        end = ts(10) if end is None else end
        return self.call("PUT", f"launch/{launch}/finish", {"endTime": end, **extra})


def error_of(r: requests.Response) -> tuple[int, int]:
    return r.status_code, r.json().get("errorCode")


# --------------------------------------------------------------------------- real client


def test_sync_client_full_launch_is_stored_as_sent(rp):
    client = RPClient(rp.url, PROJECT, api_key=KEY, http_timeout=(2, 5))
    launch = client.start_launch("Sync", T0, attributes={"build": "42"}, description="d")
    assert launch
    suite = client.start_test_item("tests/test_a.py", T0, "SUITE", code_ref="tests/test_a.py")
    ok = client.start_test_item(
        "test_ok[1]",
        T0 + timedelta(seconds=1),
        "STEP",
        parent_item_id=suite,
        code_ref="tests/test_a.py:test_ok",
        test_case_id="tests/test_a.py:test_ok[1]",
        parameters={"x": "1"},
        attributes=[{"value": "smoke"}],
    )
    nested = client.start_test_item(
        "inner", T0 + timedelta(seconds=1), "STEP", parent_item_id=ok, has_stats=False
    )
    client.finish_test_item(nested, T0 + timedelta(seconds=2), status="PASSED")
    client.log(T0 + timedelta(seconds=2), "hello", level="INFO", item_id=ok)
    client.finish_test_item(ok, T0 + timedelta(seconds=2), status="PASSED")
    bad = client.start_test_item(
        "test_bad", T0 + timedelta(seconds=2), "STEP", parent_item_id=suite
    )
    client.log(
        T0 + timedelta(seconds=3),
        "boom",
        level="ERROR",
        item_id=bad,
        attachment={"name": "trace.txt", "data": b"Traceback...", "mime": "text/plain"},
    )
    client.finish_test_item(bad, T0 + timedelta(seconds=3), status="FAILED")
    skip = client.start_test_item(
        "test_skip", T0 + timedelta(seconds=3), "STEP", parent_item_id=suite
    )
    client.finish_test_item(skip, T0 + timedelta(seconds=3), status="SKIPPED", issue=None)
    client.finish_test_item(suite, T0 + timedelta(seconds=4))
    client.log(
        T0 + timedelta(seconds=4), "coverage", attachment={"name": "cov.xml", "data": b"<x/>"}
    )
    client.finish_launch(T0 + timedelta(seconds=5))
    info = client.get_launch_info()
    client.close()

    assert rp.violations == [] and rp.errors == []
    stored = rp.launch(launch)
    assert info["id"] == stored.id and info["status"] == "FAILED"
    assert stored.name == "Sync" and stored.description == "d"
    assert {"key": "build", "value": "42", "system": False} in stored.attributes
    assert stored.status == "FAILED" and stored.end_time == T0 + timedelta(seconds=5)
    [tree] = rp.tree(launch)
    assert (tree["name"], tree["type"], tree["status"]) == ("tests/test_a.py", "SUITE", "FAILED")
    assert [(c["name"], c["status"]) for c in tree["children"]] == [
        ("test_ok[1]", "PASSED"),
        ("test_bad", "FAILED"),
        ("test_skip", "SKIPPED"),
    ]
    assert tree["children"][0]["children"][0]["hasStats"] is False
    ok_item = rp.item(ok)
    assert ok_item.code_ref == "tests/test_a.py:test_ok"
    assert ok_item.test_case_id == "tests/test_a.py:test_ok[1]"
    assert ok_item.parameters == [{"key": "x", "value": "1"}]
    assert ok_item.attributes == [{"key": None, "value": "smoke", "system": False}]
    assert ok_item.issue is None
    assert rp.item(bad).issue["issueType"] == "ti001"  # no issue sent -> To Investigate
    assert rp.item(skip).issue["issueType"] == "ti001"
    assert [x.message for x in rp.logs(item_uuid=ok)] == ["hello"]
    [trace] = rp.logs(item_uuid=bad)
    assert (trace.file_name, trace.file_content, trace.level) == (
        "trace.txt",
        b"Traceback...",
        "ERROR",
    )
    [cov] = rp.logs(launch, item_uuid="")
    assert (cov.file_name, cov.file_content) == ("cov.xml", b"<x/>")
    stats = requests.get(
        f"{rp.url}/api/v1/{PROJECT}/launch/uuid/{launch}",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    ).json()["statistics"]
    assert stats["executions"] == {"total": 3, "passed": 1, "failed": 1, "skipped": 1}
    assert stats["defects"]["to_investigate"]["total"] == 2
    # the client used v2 for reporting, v1 for the read-back, ISO timestamps (server >= 5.13.2)
    starts = [r for r in rp.requests if r.endpoint == "start_item"]
    assert {r.api for r in starts} == {"v2"}
    assert b"2026-11-25T12:00:01" in starts[1].body
    assert rp.count("log_batch") >= 1 and rp.count("start_item") == 5


def test_sync_client_against_old_server_sends_epoch_ms(rp):
    rp.version = "5.11.0"
    client = RPClient(rp.url, PROJECT, api_key=KEY, http_timeout=(2, 5))
    launch = client.start_launch("Old", T0)
    step = client.start_test_item("s", T0, "STEP")
    client.finish_test_item(step, T0 + timedelta(seconds=1), status="PASSED")
    client.finish_launch(T0 + timedelta(seconds=1))
    client.close()
    body = next(r.body for r in rp.requests if r.endpoint == "start_launch")
    assert str(int(T0.timestamp() * 1000)).encode() in body
    assert rp.launch(launch).status == "PASSED" and rp.violations == []


def test_batched_async_client_full_launch(rp):
    client = create_client(
        ClientType.ASYNC_BATCHED, rp.url, PROJECT, api_key=KEY, http_timeout=(2, 5)
    )
    launch = client.start_launch("Batched", T0)
    suite = client.start_test_item("suite", T0, "SUITE")
    steps = []
    for n in range(12):
        step = client.start_test_item(f"t{n}", T0, "STEP", parent_item_id=suite)
        client.log(
            T0,
            f"log {n}",
            item_id=step,
            attachment={
                "name": f"f{n}.bin",
                "data": bytes([n]) * 3,
                "mime": "application/octet-stream",
            },
        )
        client.finish_test_item(step, T0, status="FAILED" if n == 3 else "PASSED")
        steps.append(step)
    # A batch is sent concurrently: without this barrier the suite's (or launch's) finish
    # can overtake its children's finishes, which the server reports as a violation.
    client.finish_tasks()
    client.finish_test_item(suite, T0)
    client.finish_tasks()
    client.finish_launch(T0)
    client.close()
    launch_uuid = launch.blocking_result()

    assert rp.violations == [] and rp.errors == []
    stored = rp.launch(launch_uuid)
    assert stored.status == "FAILED"
    leaves = rp.leaves(launch_uuid)
    assert sorted((x.name, x.status) for x in leaves) == sorted(
        (f"t{n}", "FAILED" if n == 3 else "PASSED") for n in range(12)
    )
    logs = rp.logs(launch_uuid)
    assert len(logs) == 12
    assert {x.file_name: x.file_content for x in logs}["f5.bin"] == b"\x05\x05\x05"
    assert all(x.item_uuid for x in logs)


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "value",
    [
        int(T0.timestamp() * 1000),
        str(int(T0.timestamp() * 1000)),
        "2026-11-25T12:00:00Z",
        "2026-11-25T12:00:00.000+00:00",
        "2026-11-25T13:00:00+01:00",
        "2026-11-25T12:00:00.000000+0000",
        "2026-11-25T12:00:00",
        "2026-11-25 12:00:00",
        "Wed, 25 Nov 2026 12:00:00 GMT",
    ],
)
def test_every_documented_timestamp_format_is_accepted(rp, value):
    assert parse_time(value) == T0
    api = Raw(rp)
    launch = api.launch(start=value)
    assert rp.launch(launch).start_time == T0


# --------------------------------------------------------------------------- validation v1


def test_auth_project_and_public_endpoints(rp):
    assert requests.get(f"{rp.url}/api/info", timeout=5).json()["build"]["version"] == "5.15.1"
    assert requests.get(f"{rp.url}/api/health", timeout=5).json() == {"status": "UP"}
    assert requests.get(f"{rp.url}/api/users", timeout=5).status_code == 401
    users = requests.get(
        f"{rp.url}/api/users", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    )
    assert PROJECT in users.json()["assignedProjects"]
    assert error_of(Raw(rp, key=None).call("GET", "settings")) == (401, 4003)
    assert error_of(Raw(rp, key="bad-key").call("GET", "settings")) == (401, 4003)
    assert error_of(Raw(rp, project="nope").call("GET", "settings")) == (404, 4040)
    settings = Raw(rp).call("GET", "settings").json()["subTypes"]
    assert settings["TO_INVESTIGATE"][0]["locator"] == "ti001"
    assert {g: s[0]["shortName"] for g, s in settings.items()} == {
        "TO_INVESTIGATE": "TI",
        "PRODUCT_BUG": "PB",
        "AUTOMATION_BUG": "AB",
        "SYSTEM_ISSUE": "SI",
        "NO_DEFECT": "ND",
    }
    assert rp.launches == []


BAD_LAUNCHES = [
    {"startTime": ts()},
    {"name": "  ", "startTime": ts()},
    {"name": "x" * 257, "startTime": ts()},
    {"name": "L"},
    {"name": "L", "startTime": "yesterday"},
    {"name": "L", "startTime": ts(), "attributes": [{"key": "k", "value": ""}]},
    {"name": "L", "startTime": ts(), "attributes": [{"key": "k", "value": " "}]},
    {"name": "L", "startTime": ts(), "attributes": [{"value": str(n)} for n in range(257)]},
    {"name": "L", "startTime": ts(), "mode": "FAST"},
]


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("body", BAD_LAUNCHES)
def test_bad_launch_start_is_400_on_both_apis(rp, api, body):
    assert error_of(Raw(rp, api).call("POST", "launch", body)) == (400, 4001)
    assert rp.launches == []


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_bad_item_bodies_are_400_on_both_apis(rp, api):
    raw = Raw(rp, api)
    launch = raw.launch()
    good = {"name": "t", "startTime": ts(1), "type": "STEP", "launchUuid": launch}
    for change in [
        {"type": "TESTCASE"},
        {"type": None},
        {"launchUuid": None},
        {"name": None},
        {"name": "x" * 1025},
        {"startTime": None},
        {"attributes": [{"key": "k", "value": ""}]},
        {"parameters": [{"value": "no key"}]},
        {"testCaseId": "x" * 1025},
    ]:
        r = raw.call("POST", "item", good | change)
        assert error_of(r) == (400, 4001), change
    assert raw.item(launch, type_="step") and raw.item(launch, type_="Before_Method")
    assert raw.item(launch, name="x" * 1024)
    item = raw.item(launch)
    assert error_of(raw.finish_item(launch, item, status="GREEN")) == (400, 4001)
    assert error_of(raw.finish_item(launch, item, end=None)) == (400, 4001)
    assert raw.finish_item(launch, item, status="passed").status_code == 200
    assert rp.item(item).status == "PASSED"
    assert error_of(raw.finish_launch(launch, status="done")) == (400, 4001)
    if api == "v2":
        r = raw.call("PUT", f"item/{item}", {"endTime": ts(5), "status": "PASSED"})
        assert error_of(r) == (400, 4001)  # v2 finish needs launchUuid
    assert rp.violations == []


def test_v1_business_rules_are_returned_as_errors(rp):
    raw = Raw(rp)
    launch = raw.launch(start=ts(0))
    missing = str(uuidlib.uuid4())
    body = {"name": "t", "startTime": ts(1), "type": "STEP", "launchUuid": missing}
    assert error_of(raw.call("POST", "item", body)) == (404, 4041)
    body["launchUuid"] = launch
    assert error_of(raw.call("POST", f"item/{missing}", body)) == (404, 4043)
    assert error_of(raw.finish_item(launch, missing)) == (404, 4043)
    assert error_of(raw.finish_launch(missing)) == (404, 4041)
    # child earlier than parent, item earlier than launch
    suite = raw.item(launch, "suite", start=ts(5), type_="SUITE")
    early = {"name": "c", "startTime": ts(4), "type": "STEP", "launchUuid": launch}
    assert error_of(raw.call("POST", f"item/{suite}", early)) == (406, 40025)
    early["startTime"] = ts(-1)
    assert error_of(raw.call("POST", "item", early)) == (406, 40025)
    # root retry, non-nested child under a nested step
    assert error_of(raw.call("POST", "item", early | {"startTime": ts(1), "retry": True})) == (
        400,
        40016,
    )
    nested = raw.item(launch, "n", start=ts(6), parent=suite, hasStats=False)
    r = raw.call("POST", f"item/{nested}", early | {"startTime": ts(6)})
    assert error_of(r) == (400, 4001)
    # duplicate client uuid: 500, nothing duplicated
    own = str(uuidlib.uuid4())
    assert raw.item(launch, "first", start=ts(6), parent=suite, uuid=own) == own
    again = {
        "name": "second",
        "startTime": ts(6),
        "type": "STEP",
        "launchUuid": launch,
        "uuid": own,
    }
    assert error_of(raw.call("POST", f"item/{suite}", again)) == (500, 5000)
    assert [i.name for i in rp.items() if i.uuid == own] == ["first"]
    dup_launch = raw.call("POST", "launch", {"name": "L", "startTime": ts(), "uuid": launch})
    assert error_of(dup_launch) == (500, 5000) and len(rp.launches) == 1
    # item finish earlier than its start
    assert error_of(raw.finish_item(launch, own, end=ts(1))) == (406, 40021)
    for item in (own, nested, suite):
        assert raw.finish_item(launch, item, end=ts(7)).status_code == 200
    # launch finish earlier than start, then twice
    assert error_of(raw.finish_launch(launch, end=ts(-5))) == (406, 40021)
    assert raw.finish_launch(launch).status_code == 200
    assert error_of(raw.finish_launch(launch)) == (406, 40023)
    assert rp.violations == []
    assert {(e["status"], e["code"]) for e in rp.errors} >= {(404, 4041), (406, 40023)}


def test_unfinished_items_and_late_items_are_violations(rp):
    raw = Raw(rp)
    launch = raw.launch()
    suite = raw.item(launch, "suite", type_="SUITE")
    step = raw.item(launch, "open", parent=suite)
    assert raw.finish_launch(launch).status_code == 200  # real server force-finishes
    assert rp.item(step).status == "INTERRUPTED" and rp.launch(launch).status == "FAILED"
    assert any("before all its items were finished" in v["message"] for v in rp.violations)
    # a late finish re-finishes the leaf; computed parent and launch statuses follow it
    assert raw.finish_item(launch, step, status="PASSED").status_code == 200
    assert rp.item(step).status == rp.item(suite).status == rp.launch(launch).status == "PASSED"
    assert any("finished after its launch" in v["message"] for v in rp.violations)
    late = raw.item(launch, "late", start=ts(20))  # RP 5.15 accepts this silently
    assert late and any("already finished" in v["message"] for v in rp.violations)


def test_parent_status_is_computed_and_issues_resolved(rp):
    raw = Raw(rp)
    launch = raw.launch()
    suite = raw.item(launch, "suite", type_="SUITE")
    a = raw.item(launch, "a", parent=suite)
    b = raw.item(launch, "b", parent=suite)
    c = raw.item(launch, "c", parent=suite)
    raw.finish_item(launch, a, status="PASSED")
    raw.finish_item(launch, b, status="SKIPPED", issue={"issueType": "NOT_ISSUE"})
    raw.finish_item(launch, c, status="FAILED", issue={"issue_type": "pb001", "comment": "bug"})
    assert error_of(raw.finish_item(launch, c, status="FAILED", issue={"issueType": "zz999"})) == (
        404,
        4044,
    )
    raw.call("PUT", f"item/{suite}", {"endTime": ts(6)})
    raw.finish_launch(launch)
    assert rp.item(b).issue is None
    assert rp.item(c).issue["issueType"] == "pb001" and rp.item(c).issue["comment"] == "bug"
    assert rp.item(suite).status == "FAILED"  # skipped child counts as not passed
    leaf_only = raw.launch("ok")
    step = raw.item(leaf_only)
    raw.finish_item(leaf_only, step, status=None)
    raw.finish_launch(leaf_only)
    assert rp.item(step).status == "INTERRUPTED"  # leaf finished without status
    assert rp.violations == []


# --------------------------------------------------------------------------- validation v2


def test_v2_business_errors_are_accepted_and_recorded_as_violations(rp):
    raw = Raw(rp, "v2")
    launch = raw.launch(start=ts(0))
    assert "number" not in raw.call("POST", "launch", {"name": "x", "startTime": ts()}).json()
    suite = raw.item(launch, "suite", start=ts(5), type_="SUITE")
    body = {"name": "c", "startTime": ts(4), "type": "STEP", "launchUuid": launch}
    assert raw.call("POST", f"item/{suite}", body).status_code == 201  # accepted, then dropped
    assert rp.item(suite).children == []
    assert [v["code"] for v in rp.violations] == [40025]
    raw.finish_item(launch, suite, end=ts(7))
    assert raw.finish_launch(launch).status_code == 200
    assert raw.finish_launch(launch).status_code == 200  # accepted, then dropped
    assert [v["code"] for v in rp.violations] == [40025, 40023]
    dup = {
        "name": "again",
        "startTime": ts(6),
        "type": "SUITE",
        "launchUuid": launch,
        "uuid": suite,
    }
    assert raw.call("POST", "item", dup).status_code == 201  # replayed start: no duplicate
    assert [v["code"] for v in rp.violations] == [40025, 40023, 5000]
    assert [i.name for i in rp.items()] == ["suite"]
    assert rp.errors == []


def test_v2_out_of_order_messages_wait_for_their_parent(rp):
    raw = Raw(rp, "v2")
    launch, suite, step = (str(uuidlib.uuid4()) for _ in range(3))
    # child, logs and finishes arrive before the launch and parent exist
    raw.item(launch, "step", start=ts(2), parent=suite, uuid=step)
    raw.call(
        "POST", "log/entry", {"launchUuid": launch, "itemUuid": step, "time": ts(2), "message": "m"}
    )
    raw.finish_item(launch, step, status="PASSED", end=ts(3))
    assert len(rp.violations) == 3  # still waiting
    raw.launch(start=ts(0), uuid=launch)
    raw.item(launch, "suite", start=ts(1), type_="SUITE", uuid=suite)
    raw.finish_item(launch, suite, status=None, end=ts(4))
    raw.finish_launch(launch, end=ts(5))
    assert rp.violations == []
    assert rp.item(step).status == "PASSED" and rp.launch(launch).status == "PASSED"
    assert [x.message for x in rp.logs(item_uuid=step)] == ["m"]
    orphan = raw.item(launch, "orphan", start=ts(2), parent=str(uuidlib.uuid4()))
    assert orphan and [v["code"] for v in rp.violations] == [4043]


def test_log_batch_multipart_per_element_responses(rp):
    raw = Raw(rp)
    launch = raw.launch()
    step = raw.item(launch)
    good = {
        "launchUuid": launch,
        "itemUuid": step,
        "time": ts(2),
        "message": "a",
        "file": {"name": "a.txt"},
    }
    no_time = {"launchUuid": launch, "itemUuid": step, "message": "b"}
    launch_log = {"launchUuid": launch, "time": ts(2), "message": "c"}
    files = [
        (
            "json_request_part",
            (None, requests.compat.json.dumps([good, no_time, launch_log]), "application/json"),
        ),
        ("file", ("a.txt", b"AAA", "text/plain")),
    ]
    r = raw.s.post(f"{raw.base}/log", files=files, timeout=5)
    assert r.status_code == 201
    responses = r.json()["responses"]
    assert "id" in responses[0] and "message" in responses[1] and "id" in responses[2]
    assert [(x.message, x.file_content) for x in rp.logs(item_uuid=step)] == [("a", b"AAA")]
    assert [x.message for x in rp.logs(launch, item_uuid="")] == ["c"]
    assert [v["code"] for v in rp.violations] == [4001]  # the element error is also recorded


# --------------------------------------------------------------------------- faults


def test_status_schedule_and_counts(rp):
    raw = Raw(rp)
    rp.fail_next(2, 503, match="settings")
    rp.fail_next(1, 500, match="settings")
    codes = [raw.call("GET", "settings").status_code for _ in range(4)]
    assert codes == [503, 503, 500, 200]
    assert rp.count("settings") == 4 and rp.counts["settings"] == 4
    assert [r.fault for r in rp.requests] == ["status"] * 3 + [None]
    rp.fail_always(500, match=r"^POST /api/v\d/proj/launch$")
    assert raw.call("POST", "launch", {"name": "L", "startTime": ts()}).status_code == 500
    assert raw.call("GET", "settings").status_code == 200
    rp.clear_faults()
    assert raw.launch()
    assert rp.errors == []  # injected faults are not validation errors


def test_async_client_retries_through_503(rp):
    rp.fail_next(2, 503, match="start_launch")
    client = create_client(
        ClientType.ASYNC_BATCHED, rp.url, PROJECT, api_key=KEY, http_timeout=(2, 5)
    )
    launch = client.start_launch("Retried", T0)
    client.finish_launch(T0)
    client.close()
    assert launch.blocking_result() and rp.count("start_launch") == 3
    assert len(rp.launches) == 1 and rp.launch().status == "PASSED"


def test_latency_applies_to_every_request(rp):
    rp.set_latency(0.02)
    raw = Raw(rp)
    started = time.perf_counter()
    for _ in range(5):
        raw.call("GET", "settings")
    elapsed = time.perf_counter() - started
    assert rp.count() == 5 and elapsed >= 5 * 0.02
    rp.set_latency(0)
    rp.set_latency(1.0, match="start_launch")  # per endpoint: other requests are not delayed
    started = time.perf_counter()
    raw.call("GET", "settings")
    assert time.perf_counter() - started < 1.0 and rp.count() == 6


def test_down_refuses_connections_and_up_keeps_port_and_data(rp):
    raw = Raw(rp)
    launch = raw.launch()
    port = rp.port
    rp.down()
    with pytest.raises(requests.ConnectionError):
        raw.call("GET", "settings")
    client = RPClient(rp.url, PROJECT, api_key=KEY, http_timeout=(1, 1))
    assert client.start_launch("while down", T0) is None
    client.close()
    rp.start()
    assert rp.port == port
    assert raw.call("GET", f"launch/uuid/{launch}").json()["uuid"] == launch


def test_rejected_key_gets_401(rp):
    rp.reject_key(KEY)
    client = RPClient(rp.url, PROJECT, api_key=KEY, http_timeout=(1, 2))
    assert client.start_launch("L", T0) is None
    client.close()
    assert rp.launches == [] and rp.errors[0]["status"] == 401
    rp.accept_key(KEY)
    assert Raw(rp).launch()


def test_hang_makes_a_short_client_timeout_fire(rp):
    rp.hang(seconds=10, n=1, match="start_launch")
    client = RPClient(rp.url, PROJECT, api_key=KEY, http_timeout=(1, 0.3))
    started = time.perf_counter()
    assert client.start_launch("L", T0) is None
    assert time.perf_counter() - started < 3
    client.close()
    raw = Raw(rp)
    with pytest.raises(requests.Timeout):
        rp.hang(seconds=10, match="settings")
        raw.s.get(f"{raw.base}/settings", timeout=0.3)
    rp.clear_faults()
    assert raw.launch()
    assert [r.fault for r in rp.requests if r.endpoint == "start_launch"][:1] == ["hang"]


# --------------------------------------------------------------------------- management


def test_launch_update_replaces_non_system_attributes(rp):
    raw = Raw(rp)
    attrs = [{"key": "agent", "value": "x", "system": True}, {"key": "k", "value": "old"}]
    launch = raw.launch(attributes=attrs)
    raw.finish_launch(launch, attributes=[{"key": "fin", "value": "1"}])  # appended
    got = raw.call("GET", f"launch/uuid/{launch}").json()
    assert [a["key"] for a in got["attributes"]] == ["agent", "k", "fin"]
    new = [{"key": "coverage", "value": "87.5"}, {"key": "coverage:calc", "value": "90"}]
    r = raw.call("PUT", f"launch/{got['id']}/update", {"attributes": new, "description": "cov"})
    assert r.status_code == 200
    assert rp.launch(launch).attributes == [
        {"key": "agent", "value": "x", "system": True},
        {"key": "coverage", "value": "87.5", "system": False},
        {"key": "coverage:calc", "value": "90", "system": False},
    ]
    assert rp.launch(launch).description == "cov"
    bad = raw.call("PUT", f"launch/{got['id']}/update", {"attributes": [{"key": "k", "value": ""}]})
    assert error_of(bad) == (400, 4001)
    assert error_of(raw.call("PUT", "launch/999999/update", {"attributes": new})) == (404, 4041)
    item = raw.item(launch, start=ts(1), attributes=[{"key": "a", "value": "1"}])
    got_item = raw.call("GET", f"item/uuid/{item}").json()
    assert got_item["launchId"] == got["id"] and got_item["uuid"] == item
    r = raw.call("PUT", f"item/{got_item['id']}/update", {"attributes": [{"value": "flaky"}]})
    assert r.status_code == 200
    assert rp.item(item).attributes == [{"key": None, "value": "flaky", "system": False}]


def test_launch_list_paginates_filters_and_deletes(rp):
    raw = Raw(rp)
    uuids = [raw.launch(f"L{n}", start=ts(n * 60)) for n in range(5)]
    for u in uuids[:4]:
        raw.finish_launch(u, end=ts(1000))

    def page(**q):
        return raw.call("GET", "launch", params=q).json()

    first = page(**{"page.page": 1, "page.size": 2, "page.sort": "startTime,desc"})
    assert first["page"] == {"number": 1, "size": 2, "totalElements": 5, "totalPages": 3}
    assert [x["name"] for x in first["content"]] == ["L4", "L3"]
    last = page(**{"page.page": 3, "page.size": 2, "page.sort": "startTime,desc"})
    assert [x["name"] for x in last["content"]] == ["L0"]
    asc = page(**{"page.sort": "startTime,asc"})
    assert [x["name"] for x in asc["content"]] == ["L0", "L1", "L2", "L3", "L4"]
    older = page(**{"filter.lt.startTime": ts(120)})
    assert {x["name"] for x in older["content"]} == {"L0", "L1"}
    between = page(**{"filter.btw.startTime": f"{ts(60)};{ts(180)}"})
    assert {x["name"] for x in between["content"]} == {"L1", "L2", "L3"}
    ids = [x["id"] for x in older["content"]]
    in_progress = rp.launch(uuids[4]).id
    r = raw.call("DELETE", "launch", {"ids": [*ids, in_progress, 424242]})
    assert r.status_code == 200
    assert sorted(r.json()["successfullyRemoved"]) == sorted(ids)
    assert r.json()["notFound"] == [424242] and len(r.json()["errors"]) == 1
    assert [x.name for x in rp.launches] == ["L2", "L3", "L4"]
    l2 = rp.launch(uuids[2]).id
    assert raw.call("DELETE", f"launch/{l2}").status_code == 200
    assert error_of(raw.call("DELETE", f"launch/{l2}")) == (404, 4041)
    assert [x.name for x in rp.launches] == ["L3", "L4"]


def test_received_bytes_expose_planted_secret_but_not_auth_header(rp):
    secret = "s3cr3t-T0KEN-value"
    api = Raw(rp, key=secret)
    rp.accept_key(secret)
    launch = api.launch()
    api.call("POST", "log/entry", {"launchUuid": launch, "time": ts(1), "message": "clean"})
    seen = rp.received_bytes()
    assert secret.encode() not in seen  # only ever sent in Authorization
    assert all(r.has_auth for r in rp.requests)
    leak = f"oops Bearer {secret}"
    api.call("POST", "log/entry", {"launchUuid": launch, "time": ts(1), "message": leak})
    assert secret.encode() in rp.received_bytes()
    api.call("GET", "launch", params={"filter.eq.name": secret})
    assert any(secret in r.path for r in rp.requests)
    assert rp.leaks(secret) == [
        f"POST /api/v1/{PROJECT}/log/entry body",
        f"GET /api/v1/{PROJECT}/launch path",
    ]
    assert rp.leaks("never-sent") == []


def test_rerun_reopens_the_latest_launch_of_the_same_name(rp):
    raw = Raw(rp, "v2")
    first = raw.launch("nightly", attributes=[{"value": "run1"}])
    raw.finish_launch(first)
    again = raw.call(
        "POST",
        "launch",
        {"name": "nightly", "startTime": ts(20), "rerun": True, "uuid": str(uuidlib.uuid4())},
    )
    assert again.json()["id"] == first  # the server's uuid wins over the client's
    assert rp.launch(first).status == "IN_PROGRESS" and len(rp.launches) == 1
    missing = raw.call("POST", "launch", {"name": "other", "startTime": ts(), "rerun": True})
    assert missing.status_code == 201 and [v["code"] for v in rp.violations] == [4041]


def test_server_is_thread_safe_under_concurrent_v2_reporting(rp):
    from concurrent.futures import ThreadPoolExecutor

    raw = Raw(rp, "v2")
    launch = raw.launch()

    def one(n: int) -> None:
        api = Raw(rp, "v2")
        item = api.item(launch, f"t{n}", start=ts(1))
        api.call("POST", "log/entry", {"launchUuid": launch, "itemUuid": item, "time": ts(2)})
        api.finish_item(launch, item, status="PASSED")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(80)))
    raw.finish_launch(launch)
    assert rp.violations == [] and len(rp.items(launch)) == 80 and len(rp.logs(launch)) == 80
    assert rp.launch(launch).status == "PASSED" and rp.count("start_item") == 80


# --------------------------------------------------------------------------- official agent


def test_official_pytest_agent_reports_a_clean_launch(rp, tmp_path):
    pytest.importorskip("pytest_reportportal")
    (tmp_path / "test_tiny.py").write_text(
        textwrap.dedent(
            """
            import logging
            import pytest

            def test_pass():
                logging.getLogger(__name__).warning("hello from test")

            def test_fail():
                assert 1 == 2

            @pytest.mark.skip(reason="not today")
            def test_skip():
                pass

            @pytest.mark.parametrize("x", [1, 2])
            def test_param(x):
                assert x

            class TestGroup:
                def test_in_class(self):
                    pass
            """
        )
    )
    env = os.environ | {
        "AGENT_NO_ANALYTICS": "1",
        "RP_API_KEY": KEY,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "--reportportal",
        f"--rp-endpoint={rp.url}",
        f"--rp-project={PROJECT}",
        "--rp-launch=baseline",
        "-o",
        "rp_hierarchy_code=True",
        "-o",
        "rp_connect_timeout=2",
        "-o",
        "rp_read_timeout=5",
        "test_tiny.py",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one failing test
    assert rp.violations == [] and rp.errors == [], str((rp.violations, rp.errors))
    launch = rp.launch()
    assert launch.name == "baseline" and launch.status == "FAILED"
    assert any(a["system"] and a["key"] == "agent" for a in launch.attributes)
    assert all(r.has_auth for r in rp.requests if r.endpoint not in {"info", "health"})
    assert KEY.encode() not in rp.received_bytes()
    leaves = {x.name: x for x in rp.leaves(launch.uuid)}
    assert {n: x.status for n, x in leaves.items()} == {
        "test_pass": "PASSED",
        "test_fail": "FAILED",
        "test_skip": "SKIPPED",
        "test_param[1]": "PASSED",
        "test_param[2]": "PASSED",
        "test_in_class": "PASSED",
    }
    assert leaves["test_param[1]"].parameters == [{"key": "x", "value": "1"}]
    assert leaves["test_param[1]"].test_case_id == "test_tiny.py:test_param[1]"
    assert leaves["test_in_class"].code_ref == "test_tiny.py:TestGroup.test_in_class"
    assert leaves["test_skip"].issue["issueType"] == "ti001"
    assert any(
        "hello from test" in (x.message or "") for x in rp.logs(item_uuid=leaves["test_pass"].uuid)
    )
    assert any(
        "assert 1 == 2" in (x.message or "") for x in rp.logs(item_uuid=leaves["test_fail"].uuid)
    )
    assert {i.type for i in rp.items(launch.uuid) if i.children} == {"SUITE"}
