"""`inv daily` / `weekly` / `monthly`: the real CLI, real RP and webhook servers on 127.0.0.1,
real processes for the lock, and the library for the guard around each step."""

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, REPO, clean_env, run_cli, write_files
from local_http import Handler, LocalServer
from ops_helpers import fill_history
from rp_server import RPServer
from test_alerts import Hook, free_port
from test_ci_status import TOKEN, FakeGitHub, github_section

from testviper import config as config_module
from testviper.config import ROUTINE_STEPS
from testviper.ops import routines

KEY_A, KEY_B = "tv-ROUTINE-KEY-a-6d2f9c", "tv-ROUTINE-KEY-b-81e0aa"
LINE = re.compile(
    r"^(?P<routine>daily|weekly|monthly): (?P<step>[a-z]+) \.+ "
    r"(?P<state>OK|WARNING|CRITICAL|UNKNOWN|SKIPPED) +(?P<secs>\d+\.\d\d)s  (?P<detail>.+)$"
)
# pip must not reach the internet: its index is a closed port on loopback.
OFFLINE_PIP = {
    "PIP_CONFIG_FILE": os.devnull,
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_FIND_LINKS": "",
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
}


# --------------------------------------------------------------------------- helpers


def env(**extra: str) -> dict[str, str]:
    return clean_env(
        **{"AGENT_NO_ANALYTICS": "1", "RP_KEY_A": KEY_A, "RP_KEY_B": KEY_B, **OFFLINE_PIP, **extra}
    )


def configure(root: Path, **sections: Any) -> None:
    """Set whole sections of the project's testviper.yaml."""
    path = root / "testviper.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(sections)
    path.write_text(yaml.safe_dump(data))


def run(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, cwd=root, env=env(**extra), timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    for secret in (KEY_A, KEY_B, TOKEN):
        assert secret not in done.stdout + done.stderr
    return done


def steps(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str]]:
    """The step lines as {step: (state, detail)}; every line but the summary must be one."""
    *lines, summary = done.stdout.splitlines()
    found = {}
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a step line: {line!r}"
        found[match["step"]] = (match["state"], match["detail"])
    assert summary.startswith(f"{match['routine']}: "), summary
    return found


def summary(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.splitlines()[-1]


def history(root: Path, days: list[float]) -> None:
    """Runs of project calc, each with one failing test, started ``days`` ago."""
    now = datetime.now(UTC).replace(tzinfo=None)
    fill_history(root / ".testviper" / "history.sqlite", [now - timedelta(days=d) for d in days])


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.close()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    server = FakeGitHub()
    yield server
    server.close()


@pytest.fixture
def proj(project: Path) -> Path:
    """The calc project with nine days of runs; alerts, RP and GitHub not configured.

    The stored runs (ops_helpers.make_run) measure src/m0.py and src/m1.py: the
    components are those files.
    """
    write_files(project, {"src/m0.py": "", "src/m1.py": ""})
    configure(
        project,
        components={"arith": {"source": ["src/m0.py"]}, "text": {"source": ["src/m1.py"]}},
    )
    history(project, [9, 7, 5, 3, 1, 0.01])
    return project


def instance(name: str, url: str, key_env: str) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint": url,
        "project": "proj",
        "api_key_env": key_env,
        "timeout": 2,
        "retries": 0,
    }


# --------------------------------------------------------------------------- every routine


def test_step_functions_match_the_config_names() -> None:
    assert {name: tuple(funcs) for name, funcs in routines.STEPS.items()} == ROUTINE_STEPS


def test_daily_runs_every_step_in_order(proj: Path) -> None:
    done = run(proj, "daily")
    found = steps(done)
    assert list(found) == [*ROUTINE_STEPS["daily"], "alert"]
    assert found["health"][0] == "OK"
    assert found["sync"] == ("OK", "outbox empty: every run delivered")
    # every stored run has a failing test: the gate fails, which the routine reports only
    assert found["gate"][0] == "WARNING"
    assert "gate FAIL" in found["gate"][1] and "t.py::test_0" in found["gate"][1]
    assert found["ci"] == ("SKIPPED", "not configured: set github.repository and github.workflow")
    assert found["reports"][0] == "OK" and "7 files in .testviper/reports" in found["reports"][1]
    assert found["alert"] == ("SKIPPED", "not configured: no alerts.channels")
    assert done.returncode == 1
    assert summary(done).startswith("daily: WARNING (exit 1, needs attention) in ") and summary(
        done
    ).endswith("1 WARNING, 4 OK, 1 SKIPPED - gate WARNING: " + found["gate"][1])
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    digest = proj / ".testviper" / "reports" / f"tv_daily_digest_{day}.md"
    assert found["digest"][1].endswith(f".testviper/reports/tv_daily_digest_{day}.md/.html")
    assert digest.read_text().startswith("## Daily digest: calc")
    assert digest.with_suffix(".html").is_file()
    again = steps(run(proj, "daily", "--step", "digest"))
    assert list(again) == ["digest", "alert"]
    assert f"tv_daily_digest_{day}T" in again["digest"][1]  # the first digest is kept


def test_weekly_runs_every_step(proj: Path) -> None:
    configure(proj, thresholds={"components": {"arith": {"fail_under": 95}}})
    done = run(proj, "weekly")
    found = steps(done)
    assert list(found) == [*ROUTINE_STEPS["weekly"], "alert"]
    assert found["digest"][0] == "OK" and "tv_weekly_digest_" in found["digest"][1]
    assert found["trends"] == (
        "OK",
        "overall: latest 78.57 %, +0.00 pp since window start, slope +0.000 pp/day, "
        "median 78.57 % (MAD 0.00 pp)",
    )
    assert found["flaky"][0] == "OK" and found["slow"][0] == "OK"
    assert found["config"] == (
        "WARNING",
        "below threshold: arith 78.6 % vs fail_under 95; "
        "no threshold: overall (thresholds.* in the config); "
        "no coverage data: text (check components.*.source)",
    )
    assert done.returncode == 1
    assert "config WARNING: below threshold: arith" in summary(done)


def test_weekly_without_runs_skips_what_it_cannot_judge(project: Path) -> None:
    done = run(project, "weekly")
    found = steps(done)
    assert found["digest"][0] == "OK"
    for name in ("trends", "flaky", "slow", "config"):
        assert found[name] == ("SKIPPED", "no runs in the last 7 days: nothing to judge")
    assert done.returncode == 0
    assert summary(done).endswith(": 1 OK, 4 SKIPPED")


def test_monthly_runs_every_step_and_says_what_it_could_not_check(proj: Path) -> None:
    done = run(proj, "monthly")
    found = steps(done)
    assert list(found) == [*ROUTINE_STEPS["monthly"], "alert"]
    assert found["digest"][0] == "OK" and "tv_monthly_digest_" in found["digest"][1]
    assert found["suggestions"] == (
        "OK",
        "arith has stayed ≥ 78 % for 9 days and has no threshold: set fail_under 75",
    )
    assert found["durations"][0] == "OK"
    assert found["outdated"] == (
        "UNKNOWN",
        "could not check: the package index answered for no installed package "
        "(no network, or pip's index-url setting)",
    )
    assert found["audit"] == (
        "SKIPPED",
        "not available: pip-audit is not installed (pip install pip-audit)",
    )
    assert done.returncode == 3
    assert summary(done).startswith("monthly: UNKNOWN (exit 3, a step could not check)")


class SimpleIndex:
    """A package index (PEP 503 HTML) on loopback that lists invoke 99.0.0, nothing else."""

    def __init__(self) -> None:
        class Answer(Handler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/simple/invoke":
                    self.send_error(404)
                    return
                name = "invoke-99.0.0-py3-none-any.whl"
                body = f'<html><body><a href="/files/{name}">{name}</a></body></html>'.encode()
                self.reply(200, body, "text/html")

        self.local = LocalServer(Answer)
        self.url = f"{self.local.base}/simple"


def test_monthly_outdated_and_audit_findings(proj: Path, tmp_path: Path) -> None:
    index = SimpleIndex()
    fake = tmp_path / "fakeaudit" / "pip_audit"  # pip-audit's JSON, as `--format json` prints it
    write_files(
        fake,
        {
            "__init__.py": "",
            "__main__.py": """
                import json, sys
                print(json.dumps({"dependencies": [
                    {"name": "invoke", "version": "3.0.3", "vulns": []},
                    {"name": "oldlib", "version": "1.0", "vulns": [
                        {"id": "PYSEC-2026-1", "fix_versions": ["1.2", "1.1"], "aliases": []}]},
                ], "fixes": []}))
                sys.exit(1)
            """,
        },
    )
    try:
        done = run(
            proj,
            "monthly",
            "--step",
            "outdated",
            "--step",
            "audit",
            PIP_INDEX_URL=index.url,
            PYTHONPATH=str(fake.parent),
        )
    finally:
        index.local.close()
    found = steps(done)
    version = importlib.metadata.version("invoke")
    assert found["outdated"] == ("OK", f"1 outdated package: invoke {version} → 99.0.0")
    assert found["audit"] == (
        "CRITICAL",
        "1 vulnerable package: oldlib 1.0 (PYSEC-2026-1, fixed in 1.2)",
    )
    assert done.returncode == 2


# --------------------------------------------------------------------------- failures


def test_a_failing_step_does_not_stop_the_others(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is UNKNOWN with its cause, a UserError CRITICAL; the rest still run."""
    from testviper.errors import UserError

    def bug(ctx: routines.Context) -> routines.Outcome:
        raise KeyError("no such column")

    def misconfigured(ctx: routines.Context) -> routines.Outcome:
        raise UserError("thresholds.files: fix me")

    monkeypatch.setitem(routines.STEPS["daily"], "health", bug)
    monkeypatch.setitem(routines.STEPS["daily"], "digest", misconfigured)
    monkeypatch.delenv("TESTVIPER_CONFIG", raising=False)
    settings = config_module.load(proj / "testviper.yaml", check_paths=False)
    lines: list[str] = []
    result = routines.run_routine(settings, "daily", emit=lines.append)
    states = {s.name: s.state for s in result.steps}
    assert states == {
        "health": "UNKNOWN",
        "sync": "OK",
        "gate": "WARNING",
        "ci": "SKIPPED",
        "digest": "CRITICAL",
        "reports": "OK",
        "alert": "SKIPPED",
    }
    assert result.state == "CRITICAL" and result.exit_code == 2  # CRITICAL > WARNING > UNKNOWN
    log = proj / ".testviper" / "logs" / "routines.log"
    assert lines[0].endswith(
        "internal error: KeyError: 'no such column' (traceback in .testviper/logs/routines.log)"
    )
    assert "Traceback" in log.read_text() and "raise KeyError" in log.read_text()
    assert "digest CRITICAL: thresholds.files: fix me" in lines[-1]


@pytest.mark.parametrize(
    ("states", "code"),
    [
        (["OK", "SKIPPED"], 0),
        (["OK", "WARNING", "UNKNOWN"], 1),
        (["UNKNOWN", "OK"], 3),
        (["WARNING", "CRITICAL", "UNKNOWN"], 2),
        (["SKIPPED"], 0),
    ],
)
def test_exit_code_is_the_worst_step(states: list[str], code: int) -> None:
    result = routines.Result("daily", [routines.Step(str(i), s, "x") for i, s in enumerate(states)])
    assert result.exit_code == code


def test_ci_step_without_token_fails_alone(proj: Path, github: FakeGitHub) -> None:
    configure(proj, github=github_section(github.url))
    done = run(proj, "daily")
    found = steps(done)
    assert found["ci"][0] == "CRITICAL"
    assert found["ci"][1].startswith("github: environment variable GITHUB_TOKEN is not set")
    assert found["reports"][0] == "OK"  # the steps after it still ran
    assert done.returncode == 2
    assert github.requests == []


def test_ci_step_reports_the_latest_conclusion(proj: Path, github: FakeGitHub) -> None:
    configure(proj, github=github_section(github.url))
    found = steps(run(proj, "daily", "--step", "ci", GITHUB_TOKEN=TOKEN))
    assert found["ci"] == (
        "WARNING",
        "ci.yml: latest completed run #11 (main): failure; "
        "last 3 runs: 1 in_progress, 1 failure, 1 success",
    )


def test_unknown_step_in_config_exit_2(proj: Path) -> None:
    configure(proj, routines={"weekly": ["digest", "flakey"]})
    done = run(proj, "weekly")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        f"testviper: error: {proj / 'testviper.yaml'}: routines.weekly: item 2: 'flakey' is "
        "not a weekly step; did you mean 'flaky'? (known: digest, trends, flaky, slow, config)"
    )
    configure(proj, routines={})
    done = run(proj, "daily", "--step", "backup")
    assert done.returncode == 2
    assert "--step backup: not a daily step (known: health, sync" in done.stderr


def test_configured_subset_runs_in_the_configured_order(proj: Path) -> None:
    configure(proj, routines={"daily": ["reports", "health"]})
    assert list(steps(run(proj, "daily"))) == ["reports", "health", "alert"]


def test_sync_step_says_what_will_never_deliver(proj: Path) -> None:
    """An outbox entry whose run directory is gone fails for good: CRITICAL, kept."""
    from testviper.reporter.outbox import Entry, save_entry

    with RPServer(api_keys={KEY_A}, projects={"proj"}) as rp:
        configure(proj, reportportal={"instances": [instance("rp-a", rp.url, "RP_KEY_A")]})
        run_id = fill_history(proj / ".testviper" / "history.sqlite", [datetime.now(UTC)])[0]
        save_entry(proj / ".testviper", Entry(run_id, "rp-a", "launch-uuid-1"))
        done = run(proj, "daily", "--step", "sync")
    state, detail = steps(done)["sync"]
    assert state == "CRITICAL"
    assert detail.startswith("rp-a: cannot read the run's journal")
    assert detail.endswith(
        "1 run kept in the outbox for the next sync (will not deliver until fixed: "
        "`inv deliveries`)"
    )
    assert done.returncode == 2
    assert len(list((proj / ".testviper" / "outbox" / "rp-a").glob("*.json"))) == 1


# --------------------------------------------------------------------------- alerts


def alert_config(kind: str = "webhook") -> dict[str, Any]:
    channel = {"name": "ops", "type": kind, "url_env": "TV_TEST_HOOK_URL", "retries": 0}
    return {"channels": [channel], "backoff": 0.01}


def test_insecure_or_missing_webhook_url_is_a_failed_alert_line(proj: Path) -> None:
    configure(proj, alerts=alert_config(), routines={"daily": ["health"]})
    done = run(proj, "daily", TV_TEST_HOOK_URL="http://hooks.example.org/T0/B0/secret")
    found = steps(done)
    assert found["alert"] == (
        "CRITICAL",
        "alerts.channels[ops]: TV_TEST_HOOK_URL is an http:// URL to a non-loopback host; "
        "use https:// (the URL is a secret)",
    )
    assert done.returncode == 2
    assert "hooks.example.org" not in done.stdout
    found = steps(run(proj, "daily"))
    assert found["alert"][0] == "CRITICAL"
    assert "environment variable TV_TEST_HOOK_URL is not set" in found["alert"][1]


# --------------------------------------------------------------------------- the example


def test_daily_on_the_example_with_one_instance_down(tmp_path: Path, hook: Hook) -> None:
    """Two instances, one down: every step runs, WARNING, its runs stay in the outbox."""
    root = tmp_path / "examples"
    shutil.copytree(REPO / "examples", root, ignore=shutil.ignore_patterns(".testviper"))
    down = f"http://127.0.0.1:{free_port()}"
    with RPServer(api_keys={KEY_A}, projects={"proj"}) as up:
        configure(
            root,
            reportportal={
                "instances": [
                    instance("rp-a", up.url, "RP_KEY_A"),
                    instance("rp-b", down, "RP_KEY_B"),
                ]
            },
            alerts=alert_config(),
        )
        first = run_cli("run", cwd=root, env=env(), timeout=120)
        assert first.returncode == 0, first.stderr
        assert len(up.launches) == 1
        outbox = root / ".testviper" / "outbox"
        assert [p.parent.name for p in outbox.glob("*/*.json")] == ["rp-b"]

        done = run(root, "daily", TV_TEST_HOOK_URL=hook.url)
        found = steps(done)
        assert list(found) == [*ROUTINE_STEPS["daily"], "alert"]
        assert found["health"][0] == "WARNING", found["health"]
        assert f"rp:rp-b: {down} unreachable" in found["health"][1]
        assert found["health"][1].endswith("its runs wait in the outbox for the next sync")
        assert found["sync"][0] == "WARNING"
        assert found["sync"][1].startswith("rp-b: ") and found["sync"][1].endswith(
            "; 1 run kept in the outbox for the next sync"
        )
        assert found["gate"][0] == "OK" and found["digest"][0] == "OK"
        assert found["alert"] == ("OK", "ops: sent")
        assert done.returncode == 1
        head = summary(done)
        assert head.startswith("daily: WARNING (exit 1, needs attention) in ")
        assert "sync WARNING: rp-b: " in head and "kept in the outbox for the next sync" in head
        # nothing lost: the down instance's run waits for the next sync; rp-a got no duplicate
        assert [p.parent.name for p in outbox.glob("*/*.json")] == ["rp-b"]
        assert len(up.launches) == 1
        # the same problems again: the alert is not repeated within alerts.dedup_minutes
        again = steps(run(root, "daily", TV_TEST_HOOK_URL=hook.url))
        assert again["alert"][0] == "OK" and again["alert"][1].startswith("ops: deduplicated")
    (request,) = hook.requests
    body = request["body"]
    assert body["severity"] == "warning"
    assert body["title"] == "TestViper daily WARNING: shapes-example"
    assert body["text"].startswith("daily: WARNING (exit 1, needs attention)")
    assert "\n- sync WARNING: rp-b: " in body["text"]
    assert body["text"].endswith("\nOK: gate, digest, reports\nSKIPPED: ci")


# --------------------------------------------------------------------------- the lock


def start_daily(root: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "testviper"), "daily", "--step", "ci"],
        cwd=root,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_holder(root: Path, pid: int, timeout: float = 20) -> None:
    """Until the process ``pid`` holds the daily lock (its sidecar names it)."""
    sidecar = root / ".testviper" / "locks" / "daily.lock.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(sidecar.read_text())["pid"] == pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never took the daily lock")


@pytest.fixture
def slow_ci(proj: Path, github: FakeGitHub) -> FakeGitHub:
    """The daily ci step waits 4 s for GitHub: long enough to race a second run."""
    configure(proj, github=github_section(github.url))
    github.delay = 4.0
    return github


def test_two_concurrent_dailies_one_exits_75(proj: Path, slow_ci: FakeGitHub) -> None:
    first = start_daily(proj, GITHUB_TOKEN=TOKEN)
    try:
        wait_for_holder(proj, first.pid)
        started = time.monotonic()
        second = run(proj, "daily", GITHUB_TOKEN=TOKEN)
        assert time.monotonic() - started < 3  # at once, not after the first
        assert second.returncode == 75, second.stdout + second.stderr
        assert second.stdout == ""
        assert re.match(
            rf"testviper: error: another daily run holds the lock \(pid {first.pid} since "
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\); skipped",
            second.stderr,
        ), second.stderr
        out, _ = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 1  # the first one finished its run
    assert steps(subprocess.CompletedProcess([], 1, out, ""))["ci"][0] == "WARNING"


def test_killed_daily_leaves_no_lock_that_blocks(proj: Path, slow_ci: FakeGitHub) -> None:
    victim = start_daily(proj, GITHUB_TOKEN=TOKEN)
    wait_for_holder(proj, victim.pid)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    slow_ci.delay = 0
    done = run(proj, "daily", "--step", "ci", GITHUB_TOKEN=TOKEN)
    assert done.returncode == 1, done.stderr
    assert steps(done)["ci"][0] == "WARNING"


def test_inv_binary_and_help(proj: Path) -> None:
    """The `inv` entry point runs a routine too (tasks.py of the repository)."""
    done = subprocess.run(
        [str(BIN / "inv"), "--search-root", str(REPO), "weekly", "--step", "flaky", "--no-alert"],
        cwd=proj,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert list(steps(done)) == ["flaky"]
    text = run(proj, "daily", "--help").stdout
    assert "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in text and "75 when another run" in text
