"""The launch built from a real run's journal: tree, identities, statuses, logs, times."""

import json

import pytest
from conftest import PACKAGE, run_cli, write_files

from testviper.reporter.launch import Launch, build_launch, derived_uuid, split_nodeid

SUITE = {
    "tests/pkg/__init__.py": "",
    "tests/pkg/test_shapes.py": """
        import logging

        import pytest


        class TestSquare:
            @pytest.mark.parametrize("side", [1, 2])
            def test_area(self, side):
                assert side * side >= side

            def test_broken(self):
                logging.getLogger("shapes").warning("about to fail")
                assert 1 == 2, "wrong area"


        @pytest.mark.skip(reason="not yet")
        def test_later():
            pass


        @pytest.mark.xfail(reason="known")
        def test_known():
            assert False


        @pytest.mark.smoke("fast")
        def test_marked():
            pass
    """,
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The journal of one real run of SUITE (plus the sample project's own tests)."""
    root = tmp_path_factory.mktemp("launch") / "proj"
    write_files(root, PACKAGE)
    write_files(root, SUITE)
    done = run_cli("run", cwd=root)
    assert done.returncode == 1, done.stdout + done.stderr
    (journal,) = (root / ".testviper" / "runs").glob("*/journal.jsonl")
    return [json.loads(line) for line in journal.read_text().splitlines()]


def launch_for(events: list[dict], instance: str = "main", **kwargs: bool) -> Launch:
    return build_launch("019b-run", instance, "calc", events, **kwargs)


def test_tree_has_suites_for_directories_modules_and_classes(events: list[dict]) -> None:
    """tests/pkg/test_shapes.py::TestSquare::test_area[1] sits under four suites."""
    launch = launch_for(events)
    by_uuid = {i.uuid: i for i in launch.items}
    leaf = next(i for i in launch.leaves if i.name == "test_area[1]")
    chain = []
    parent = by_uuid.get(leaf.parent_uuid)
    while parent is not None:
        chain.append((parent.type, parent.name))
        parent = by_uuid.get(parent.parent_uuid)
    assert chain == [
        ("SUITE", "TestSquare"),
        ("SUITE", "test_shapes.py"),
        ("SUITE", "pkg"),
        ("SUITE", "tests"),
    ]
    positions = {i.uuid: n for n, i in enumerate(launch.items)}
    assert all(positions[i.parent_uuid] < positions[i.uuid] for i in launch.items if i.parent_uuid)
    assert len({i.uuid for i in launch.items}) == len(launch.items)


def test_leaves_statuses_and_identities(events: list[dict]) -> None:
    """Every journal test is one STEP with the agent's codeRef, testCaseId and status."""
    launch = launch_for(events)
    nodeids = {e["nodeid"] for e in events if e["event"] == "test"}
    assert len(launch.leaves) == len(nodeids) == 9
    leaves = {i.test_case_id: i for i in launch.leaves}
    area = leaves["tests/pkg/test_shapes.py:TestSquare.test_area[2]"]
    assert area.code_ref == "tests/pkg/test_shapes.py:TestSquare.test_area"
    assert (area.status, area.parameters) == ("PASSED", [{"key": "side", "value": "2"}])
    assert leaves["tests/pkg/test_shapes.py:TestSquare.test_broken"].status == "FAILED"
    later = leaves["tests/pkg/test_shapes.py:test_later"]
    assert (later.status, later.issue) == ("SKIPPED", {"issueType": "NOT_ISSUE"})
    assert leaves["tests/pkg/test_shapes.py:test_known"].status == "SKIPPED"  # xfail
    marked = leaves["tests/pkg/test_shapes.py:test_marked"]
    assert {"key": "smoke", "value": "fast"} in marked.attributes
    assert {"value": "skip"} in later.attributes
    assert all("parametrize" not in str(a) for a in area.attributes)


def test_skips_are_issues_when_configured(events: list[dict]) -> None:
    """skipped_is_issue leaves the defect type to the server (To Investigate)."""
    launch = launch_for(events, skipped_is_issue=True)
    assert all(i.issue is None for i in launch.leaves)


def test_failure_text_and_captured_log_become_logs(events: list[dict]) -> None:
    """The failure's longrepr is an ERROR log, the captured log an INFO one."""
    launch = launch_for(events)
    broken = next(i for i in launch.leaves if i.name == "test_broken")
    levels = {log.level: log.message for log in broken.logs}
    assert "wrong area" in levels["ERROR"]
    assert "about to fail" in levels["INFO"]
    assert all(log.item_uuid == broken.uuid for log in broken.logs)
    passed = next(i for i in launch.leaves if i.name == "test_area[1]")
    assert passed.logs == []


def test_uuids_are_stable_per_instance(events: list[dict]) -> None:
    """Same run and instance -> same UUIDs (replays cannot duplicate); other instance differs."""
    first, again, other = launch_for(events), launch_for(events), launch_for(events, "backup")
    assert [i.uuid for i in first.items] == [i.uuid for i in again.items]
    assert first.uuid == again.uuid == derived_uuid("019b-run", "main", "launch")
    assert not {i.uuid for i in first.items} & {i.uuid for i in other.items}
    logs = [log.uuid for i in first.items for log in i.logs]
    assert len(logs) == len(set(logs))


def test_children_never_start_before_parents(events: list[dict]) -> None:
    """Suites span their tests, so the server's start-time rule always holds."""
    launch = launch_for(events)
    by_uuid = {i.uuid: i for i in launch.items}
    for item in launch.items:
        assert launch.start <= item.start <= item.end <= launch.end
        if item.parent_uuid:
            parent = by_uuid[item.parent_uuid]
            assert parent.start <= item.start and item.end <= parent.end


def test_reruns_get_distinct_items() -> None:
    """A test reported twice (a rerun plugin) becomes two items, not one overwritten."""
    event = {
        "event": "test",
        "nodeid": "t.py::test_x",
        "outcome": "failed",
        "start": 1.0,
        "stop": 2.0,
    }
    launch = build_launch("r", "i", "n", [event, {**event, "outcome": "passed"}])
    assert [i.status for i in launch.leaves] == ["FAILED", "PASSED"]
    assert launch.leaves[0].uuid != launch.leaves[1].uuid


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("t.py::test_a", (("t.py",), (), "test_a")),
        ("a/b/t.py::C::D::test_a[x-1]", (("a", "b", "t.py"), ("C", "D"), "test_a[x-1]")),
        ("a/t_bad.py", (("a",), (), "t_bad.py")),
    ],
)
def test_split_nodeid(nodeid: str, expected: tuple) -> None:
    """Node ids split into directory/module path, classes and the test name."""
    assert split_nodeid(nodeid) == expected
