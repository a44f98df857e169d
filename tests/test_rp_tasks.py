"""`inv rp.check`, `rp.launches`, `rp.cleanup`: the real CLI against the test RP server."""

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cli, clean_env
from rp_server import RPServer

from testviper import config as config_module
from testviper.errors import UserError
from testviper.reporter import queries

KEY_A, KEY_B = "key-a-7d2e9c1b0a", "key-b-3f8a6e5d4c"


def env(**extra: str) -> dict[str, str]:
    return clean_env(AGENT_NO_ANALYTICS="1", RP_KEY_A=KEY_A, RP_KEY_B=KEY_B, **extra)


def configure(root: Path, *instances: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "testviper.yaml"
    path.write_text(yaml.safe_dump({"reportportal": {"instances": list(instances)}}))
    return path


def inst(name: str, rp: RPServer, key_env: str = "RP_KEY_A", **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpoint": rp.url, "project": "proj", "api_key_env": key_env, **extra}


def load(root: Path, monkeypatch: pytest.MonkeyPatch) -> config_module.Settings:
    monkeypatch.setenv("RP_KEY_A", KEY_A)
    monkeypatch.setenv("RP_KEY_B", KEY_B)
    return config_module.load(root / "testviper.yaml", check_paths=False)


def v1(rp: RPServer, method: str, path: str, body: Any, key: str = KEY_A) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{rp.url}/api/v1/proj{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def add_launch(rp: RPServer, name: str, days_ago: float, finished: bool = True) -> str:
    """A launch started ``days_ago`` (with one passed test), finished unless told not to."""
    start = datetime.now(UTC) - timedelta(days=days_ago)
    launch = v1(rp, "POST", "/launch", {"name": name, "startTime": start.isoformat()})["id"]
    item = v1(
        rp,
        "POST",
        "/item",
        {"name": "t", "type": "STEP", "launchUuid": launch, "startTime": start.isoformat()},
    )["id"]
    end = (start + timedelta(seconds=1)).isoformat()
    v1(rp, "PUT", f"/item/{item}", {"endTime": end, "status": "PASSED", "launchUuid": launch})
    if finished:
        v1(rp, "PUT", f"/launch/{launch}/finish", {"endTime": end})
    return launch


# --------------------------------------------------------------------------- rp.check


def test_check_ok_prints_one_line_per_instance_and_json(tmp_path: Path, cli: Cli) -> None:
    """Two usable instances: exit 0, a line each; --json gives every field."""
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_B,), version="5.14.0") as b:
        configure(tmp_path, inst("a", a), inst("b", b, "RP_KEY_B"))
        done = cli("rp.check", cwd=tmp_path, env=env())
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 2
        assert lines[0].startswith("a  ok") and "version 5.15.1" in lines[0]
        assert lines[1].startswith("b  ok") and "version 5.14.0" in lines[1]
        for line in lines:
            assert "reachable yes  key accepted  project found  latency " in line
        done = cli("rp.check", "--json", "--instance", "b", cwd=tmp_path, env=env())
        assert done.returncode == 0, done.stderr
        (b_check,) = json.loads(done.stdout)
        assert b_check["name"] == "b" and b_check["ok"] is True
        assert b_check["key_accepted"] is True and b_check["project_exists"] is True
        assert b_check["version"] == "5.14.0" and b_check["error"] is None
        assert isinstance(b_check["latency_ms"], float)
        assert b.count("settings") == 2 and a.count("settings") == 1  # --instance b only
        assert KEY_A not in done.stdout + done.stderr


def test_check_down_instance_exits_1(tmp_path: Path, cli: Cli) -> None:
    """A stopped server is unreachable; the other instance is still reported as ok."""
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_A,)) as b:
        configure(tmp_path, inst("a", a), inst("b", b))
        b.stop()
        done = cli("rp.check", "--json", cwd=tmp_path, env=env())
        assert done.returncode == 1, done.stderr
        a_check, b_check = json.loads(done.stdout)
        assert a_check["ok"] is True
        assert b_check["reachable"] is False and b_check["key_accepted"] is None
        assert "cannot reach" in b_check["error"] and "\n" not in b_check["error"]


def test_check_rejected_key_exits_1_without_printing_it(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        a.reject_key(KEY_A)
        done = cli("rp.check", cwd=tmp_path, env=env())
        assert done.returncode == 1
        assert "FAIL  reachable yes  key rejected  project -" in done.stdout
        assert "API key rejected by instance a (HTTP 401)" in done.stdout
        assert KEY_A not in done.stdout + done.stderr


def test_check_missing_project_and_missing_key(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,), projects=("other",)) as a, RPServer() as b:
        configure(tmp_path, inst("a", a), inst("b", b, "RP_KEY_UNSET"))
        done = cli("rp.check", "--json", cwd=tmp_path, env=env())
        assert done.returncode == 1
        a_check, b_check = json.loads(done.stdout)
        assert a_check["key_accepted"] is True and a_check["project_exists"] is False
        assert "project 'proj' not found" in a_check["error"]
        assert b_check["reachable"] is True and b_check["key_accepted"] is None
        assert b_check["error"] == "the API key variable RP_KEY_UNSET is not set"
        assert b.count("settings") == 0


def test_check_server_error_on_info_is_not_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 from /api/info (RP starting up, a proxy in front) stops the check there."""
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        a.fail_next(1, 503, match="info")
        (check,) = queries.check_all(load(tmp_path, monkeypatch))
        assert not check.ok and check.reachable and check.key_accepted is None
        assert check.error == f"{a.url} answered HTTP 503 to /api/info"
        assert a.count("settings") == 0
        (check,) = queries.check_all(load(tmp_path, monkeypatch))
        assert check.ok and check.error is None


@pytest.mark.parametrize("where", ["info", "settings"])
def test_check_hanging_instance_finishes_within_timeout(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A server that accepts the connection but never answers costs at most timeout + 1 s."""
    with RPServer(api_keys=(KEY_A,)) as a, RPServer(api_keys=(KEY_A,)) as hung:
        configure(tmp_path, inst("a", a), inst("hung", hung, timeout=1.5))
        hung.hang(60, match=where)
        settings = load(tmp_path, monkeypatch)
        started = time.monotonic()
        ok, bad = queries.check_all(settings)
        elapsed = time.monotonic() - started
        assert elapsed < 1.5 + 1, elapsed
        assert ok.ok and not bad.ok
        assert bad.reachable is (where == "settings")
        assert bad.error == f"no answer from {hung.url} within 1.5 s"
        assert hung.count(where) == 1
        done = cli("rp.check", "--instance", "hung", cwd=tmp_path, env=env())
        assert done.returncode == 1 and "no answer from" in done.stdout
        hung.clear_faults()


def test_check_unknown_instance_exits_2(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a), inst("b", a))
        done = cli("rp.check", "--instance", "nope", cwd=tmp_path, env=env())
        assert done.returncode == 2
        assert done.stderr.strip() == (
            "testviper: error: --instance nope: no such ReportPortal instance (configured: a, b)"
        )
        assert a.count() == 0


def test_check_all_unknown_name_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(tmp_path, {"name": "a", "endpoint": "http://127.0.0.1:9", "project": "p"})
    with pytest.raises(UserError, match=r"no such ReportPortal instance \(configured: a\)"):
        queries.check_all(load(tmp_path, monkeypatch), ["a", "zz"])


def test_check_without_instances_exits_2(tmp_path: Path, cli: Cli) -> None:
    configure(tmp_path)
    done = cli("rp.check", cwd=tmp_path, env=env())
    assert done.returncode == 2 and "no enabled ReportPortal instance" in done.stderr


# --------------------------------------------------------------------------- allow_insecure


def test_insecure_endpoint_needs_allow_insecure_and_warns_once(tmp_path: Path, cli: Cli) -> None:
    """http:// to a non-loopback host: refused by default; with allow_insecure, used with one
    warning. (The host is reached through a proxy on 127.0.0.1: the test server itself.)"""
    with RPServer(api_keys=(KEY_A,)) as a:
        remote = {"name": "far", "endpoint": "http://rp.example.org", "project": "proj"}
        remote["api_key_env"] = "RP_KEY_A"
        configure(tmp_path, remote)
        done = cli("rp.check", cwd=tmp_path, env=env())
        assert done.returncode == 2
        assert "http:// is only allowed for loopback" in done.stderr
        configure(tmp_path, {**remote, "allow_insecure": True})
        proxy = env(http_proxy=a.url, HTTP_PROXY=a.url, no_proxy="", NO_PROXY="")
        done = cli("rp.check", cwd=tmp_path, env=proxy)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("far  ok")
        warnings = done.stderr.splitlines()
        assert len(warnings) == 1
        assert warnings[0].startswith("testviper: warning: reportportal instance 'far' uses http")
        assert "unencrypted" in warnings[0]
        assert any(
            r.path.startswith("http://rp.example.org/api/v1/proj/settings") for r in a.requests
        )


def test_run_delivers_to_an_allowed_insecure_instance_with_one_warning(
    project: Path, cli: Cli
) -> None:
    """`testviper run` warns once about the http:// instance, and still delivers to it."""
    with RPServer(api_keys=(KEY_A,)) as a:
        data = yaml.safe_load((project / "testviper.yaml").read_text())
        remote = {"name": "far", "endpoint": "http://rp.example.org:8080", "project": "proj"}
        data["reportportal"] = {
            "instances": [{**remote, "api_key_env": "RP_KEY_A", "allow_insecure": True}]
        }
        (project / "testviper.yaml").write_text(yaml.safe_dump(data))
        proxy = env(http_proxy=a.url, HTTP_PROXY=a.url, no_proxy="", NO_PROXY="")
        done = cli("run", cwd=project, env=proxy)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "delivered to far: launch" in done.stdout
        warnings = [line for line in done.stderr.splitlines() if "allow_insecure" in line]
        assert len(warnings) == 1 and "'far' uses http:// to rp.example.org" in warnings[0]
        assert len(a.leaves()) == 3


def test_insecure_warning_is_printed_once_per_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configure(
        tmp_path,
        {"name": "x", "endpoint": "http://10.0.0.7", "project": "p", "allow_insecure": True},
        {"name": "y", "endpoint": "https://rp.example.org", "project": "p"},
        {"name": "z", "endpoint": "http://[::1]:8080", "project": "p"},
    )
    monkeypatch.setattr(config_module, "_warned_insecure", set())
    instances = load(tmp_path, monkeypatch).config.reportportal.instances
    assert [i.insecure for i in instances] == [True, False, False]
    config_module.warn_insecure(instances)
    config_module.warn_insecure(instances)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "'x' uses http:// to 10.0.0.7" in lines[0]


def test_loopback_http_gives_no_warning(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a, allow_insecure=True))
        done = cli("rp.check", cwd=tmp_path, env=env())
        assert done.returncode == 0 and done.stderr == ""


# --------------------------------------------------------------------------- rp.launches


def test_launches_lists_newest_first_with_limit(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        uuids = [add_launch(a, f"run-{i}", days_ago=10 - i) for i in range(5)]
        running = add_launch(a, "live", days_ago=0, finished=False)
        done = cli("rp.launches", "--limit", "3", cwd=tmp_path, env=env())
        assert done.returncode == 0, done.stderr
        head, *rows = done.stdout.splitlines()
        assert head == f"a ({a.url}, project proj): 3 launches"
        assert [r.split()[0] for r in rows] == ["live", "run-4", "run-3"]
        assert rows[0].split()[-1] == running and rows[1].split()[-1] == uuids[4]
        assert "IN_PROGRESS" in rows[0] and "PASSED" in rows[1]
        assert "total 1 passed 1 failed 0 skipped 0" in rows[1]
        assert " #1 " in rows[1]
        (req,) = [r for r in a.requests if r.endpoint == "list_launches"]
        assert "page.size=3" in req.path and "page.sort=startTime%2Cdesc" in req.path


def test_launches_pages_through_the_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of PAGE_SIZE are fetched until the limit (or the last page) is reached."""
    monkeypatch.setattr(queries, "PAGE_SIZE", 2)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        names = [f"run-{i}" for i in range(5)]
        for i, name in enumerate(names):
            add_launch(a, name, days_ago=10 - i)
        settings = load(tmp_path, monkeypatch)
        (instance,) = settings.config.reportportal.instances
        found = queries.recent_launches(settings, instance, limit=4)
        assert [x.name for x in found] == names[::-1][:4]
        pages = [r.path for r in a.requests if r.endpoint == "list_launches"]
        assert len(pages) == 2 and "page.page=2" in pages[1]
        everything = queries.recent_launches(settings, instance, limit=50)
        assert [x.name for x in everything] == names[::-1]
        assert len([r for r in a.requests if r.endpoint == "list_launches"]) == 2 + 3


def test_launches_of_a_down_instance_exit_1(tmp_path: Path, cli: Cli) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a, retries=0, timeout=2))
        a.stop()
        done = cli("rp.launches", cwd=tmp_path, env=env())
        assert done.returncode == 1
        assert done.stderr.startswith("testviper: error: a: cannot connect to")


# --------------------------------------------------------------------------- rp.cleanup


def test_cleanup_dry_run_lists_and_apply_deletes_only_old_finished(
    tmp_path: Path, cli: Cli
) -> None:
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        old = [add_launch(a, f"old-{i}", days_ago=100 + i) for i in range(3)]
        old_running = add_launch(a, "old-running", days_ago=120, finished=False)
        recent = add_launch(a, "recent", days_ago=30)
        done = cli("rp.cleanup", "--older-than", "90d", cwd=tmp_path, env=env())
        assert done.returncode == 0, done.stderr
        assert "a: would delete 3 launches older than 90d" in done.stdout
        for uuid in old:
            assert uuid in done.stdout
        assert old_running not in done.stdout and recent not in done.stdout
        assert "1 old launches still in progress are kept" in done.stdout
        assert "dry run: nothing deleted" in done.stdout
        assert len(a.launches) == 5 and a.count("delete_launches") == 0

        done = cli("rp.cleanup", "--older-than", "12w", "--apply", cwd=tmp_path, env=env())
        assert done.returncode == 0, done.stderr
        assert "a: deleted 3 launches" in done.stdout
        assert {x.uuid for x in a.launches} == {old_running, recent}
        (req,) = [r for r in a.requests if r.endpoint == "delete_launches"]
        assert req.method == "DELETE" and len(json.loads(req.body)["ids"]) == 3


def test_cleanup_deletes_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queries, "DELETE_BATCH", 2)
    with RPServer(api_keys=(KEY_A,)) as a:
        configure(tmp_path, inst("a", a))
        for i in range(5):
            add_launch(a, f"old-{i}", days_ago=400)
        settings = load(tmp_path, monkeypatch)
        (instance,) = settings.config.reportportal.instances
        old, running = queries.old_launches(settings, instance, queries.parse_age("1y"))
        assert len(old) == 5 and running == 0
        outcome = queries.delete_launches(settings, instance, [x.id for x in old])
        assert sorted(outcome.removed) == sorted(x.id for x in old) and not outcome.errors
        assert a.count("delete_launches") == 3 and a.launches == []


@pytest.mark.parametrize(
    ("text", "days"), [("90d", 90), ("12w", 84), ("6m", 180), ("1y", 365), (" 2D ", 2)]
)
def test_parse_age(text: str, days: int) -> None:
    assert queries.parse_age(text) == timedelta(days=days)


@pytest.mark.parametrize("bad", ["", "90", "d", "0d", "-3d", "1.5w", "3x", "90 days"])
def test_cleanup_rejects_bad_ages(tmp_path: Path, cli: Cli, bad: str) -> None:
    with pytest.raises(UserError, match="give a positive age"):
        queries.parse_age(bad)
    if bad in ("3x", "0d"):
        configure(tmp_path)
        done = cli("rp.cleanup", "--older-than", bad, cwd=tmp_path, env=env())
        assert done.returncode == 2
        assert done.stderr.startswith(f"testviper: error: --older-than '{bad}': give a positive")


def test_cleanup_requires_older_than(tmp_path: Path, cli: Cli) -> None:
    configure(tmp_path)
    done = cli("rp.cleanup", cwd=tmp_path, env=env())
    assert done.returncode == 2 and "--older-than is required" in done.stderr
