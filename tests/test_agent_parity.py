"""`testviper run` and the official pytest-reportportal agent report the same tests.

Both run the same small suite against their own test RP server; the launches must hold
the same leaf tests (by codeRef + parameters, and by testCaseId), at the same statuses,
under the same suite path (directory, module, class).

Intended differences, asserted below so that a change is noticed:

- Skipped tests (``skip`` and ``xfail``): the agent attaches a "To Investigate" defect
  (``ti001``, its default ``rp_is_skipped_an_issue = True``); TestViper sends
  ``NOT_ISSUE`` (stored as no defect), so skips do not fill the triage queue (issue 4:
  "skips without a 'to investigate' defect unless configured"). Failed tests get the
  same "To Investigate" defect from both.
- Launch attributes: TestViper adds coverage (``coverage:total``, per component), git and
  the run id; the agent adds its own system attributes (agent, os, python). Not compared.
- Logs: both send the failure's longrepr on the failing test; the exact text differs
  (and how it is split into entries). Only its presence is compared.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cli, clean_env, write_files
from rp_server import RPServer

pytest.importorskip("pytest_reportportal")

KEY = "parity-key-0b6f2e9d8c"
SUITE = {
    "tests/unit/test_mixed.py": """
        import pytest


        def test_pass():
            assert True


        def test_fail():
            assert 1 == 2, "boom"


        @pytest.mark.skip(reason="not today")
        def test_skip():
            pass


        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False


        @pytest.mark.parametrize(("a", "b"), [(1, 2), (3, 4)])
        def test_param(a, b):
            assert a < b


        @pytest.mark.parametrize("word", ["ok", "bad"])
        def test_word(word):
            assert word == "ok"


        class TestGroup:
            def test_in_class(self):
                pass

            def test_in_class_fails(self):
                raise ValueError("nope")
    """,
    "tests/test_top.py": """
        def test_top():
            pass
    """,
}


def leaves(rp: RPServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    launch = rp.launch()
    return {
        (leaf.code_ref, tuple((p["key"], p["value"]) for p in leaf.parameters or [])): leaf
        for leaf in rp.leaves(launch.uuid)
    }


def suite_path(rp: RPServer, uuid: str) -> list[str]:
    names = []
    parent = rp.item(uuid).parent_uuid
    while parent:
        item = rp.item(parent)
        names.append(item.name)
        parent = item.parent_uuid
    return names[::-1]


def test_same_leaves_and_statuses_as_the_official_agent(project: Path, cli: Cli) -> None:
    write_files(project, SUITE)
    for old in (project / "tests" / "arith", project / "tests" / "text"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    config = yaml.safe_load((project / "testviper.yaml").read_text())
    config["components"] = {"calc": {"source": ["src/calc"], "tests": ["tests"]}}
    with RPServer(api_keys=(KEY,)) as agent_rp, RPServer(api_keys=(KEY,)) as tv_rp:
        config["reportportal"] = {
            "instances": [{"name": "tv", "endpoint": tv_rp.url, "project": "proj"}]
        }
        (project / "testviper.yaml").write_text(yaml.safe_dump(config))
        env = clean_env(AGENT_NO_ANALYTICS="1", RP_API_KEY=KEY, PYTHONDONTWRITEBYTECODE="1")
        agent = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--reportportal",
                f"--rp-endpoint={agent_rp.url}",
                "--rp-project=proj",
                "--rp-launch=parity",
                "-o",
                "rp_hierarchy_dirs=True",
                "-o",
                "rp_hierarchy_code=True",
                "-o",
                "rp_connect_timeout=2",
                "-o",
                "rp_read_timeout=10",
            ],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert agent.returncode == 1, agent.stdout + agent.stderr  # failing tests
        done = cli("run", cwd=project, env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "delivered to tv" in done.stdout, done.stdout + done.stderr
        for rp in (agent_rp, tv_rp):
            assert rp.violations == [] and rp.errors == [], (rp.violations, rp.errors)
            assert rp.launch().status == "FAILED"

        ours, theirs = leaves(tv_rp), leaves(agent_rp)
        assert len(ours) == len(tv_rp.leaves()) == 11  # keys are unique
        assert sorted(ours) == sorted(theirs)
        assert {k: v.status for k, v in ours.items()} == {k: v.status for k, v in theirs.items()}
        assert {v.test_case_id for v in ours.values()} == {v.test_case_id for v in theirs.values()}
        for key, leaf in ours.items():
            assert leaf.name == theirs[key].name, key
            assert suite_path(tv_rp, leaf.uuid) == suite_path(agent_rp, theirs[key].uuid), key

        statuses = {k[0].split(":")[1] + str(k[1]): v.status for k, v in ours.items()}
        assert statuses["test_xfail()"] == "SKIPPED" and statuses["test_skip()"] == "SKIPPED"
        assert statuses["TestGroup.test_in_class_fails()"] == "FAILED"
        assert statuses["test_word(('word', 'bad'),)"] == "FAILED"
        assert ours[("tests/unit/test_mixed.py:test_param", (("a", "1"), ("b", "2")))]

        # The intended difference: skips are no defect to investigate here.
        for key, leaf in ours.items():
            if leaf.status == "SKIPPED":
                assert leaf.issue is None, key  # NOT_ISSUE: stored without a defect
                assert theirs[key].issue["issueType"] == "ti001", key
            else:
                assert leaf.issue == theirs[key].issue, key
        for rp, tests in ((tv_rp, ours), (agent_rp, theirs)):
            failing = tests[("tests/unit/test_mixed.py:test_fail", ())]
            assert any("boom" in (x.message or "") for x in rp.logs(item_uuid=failing.uuid))
        assert os.environ.get("RP_API_KEY") != KEY  # the key went to the subprocesses only
