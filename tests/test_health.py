"""`inv health` and `inv diagnose`: real CLI processes, the test RP server, real SQLite files."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, REPO, clean_env, run_cli, write_files
from ops_helpers import fill_history
from rp_server import RPServer

from testviper.config import Instance
from testviper.ops import diagnose, health
from testviper.reporter.outbox import Entry, save_entry

KEY = "tv-HEALTH-KEY-7c1e5a9f3b"
NAGIOS = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


# --------------------------------------------------------------------------- helpers


def env(**extra: str) -> dict[str, str]:
    return clean_env(AGENT_NO_ANALYTICS="1", RP_API_KEY=KEY, **extra)


def configure(root: Path, rp: RPServer | None = None, **sections: Any) -> None:
    """Update testviper.yaml: sections merged in; ``rp`` as the one instance (timeout 2 s)."""
    path = root / "testviper.yaml"
    data = yaml.safe_load(path.read_text())
    if rp is not None:
        inst = {"name": "main", "endpoint": rp.url, "project": "proj", "timeout": 2}
        data["reportportal"] = {"instances": [inst]}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    path.write_text(yaml.safe_dump(data))
    path.chmod(0o600)


def state(root: Path) -> Path:
    return root / ".testviper"


def recent_run(root: Path, hours_ago: float = 1.0) -> None:
    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=hours_ago)
    fill_history(state(root) / "history.sqlite", [started])


def outbox_entry(root: Path, hours_old: float, status: str = "pending") -> None:
    created = datetime.now(UTC) - timedelta(hours=hours_old)
    entry = Entry(
        run_id=f"0190{int(hours_old * 1000):012d}",
        instance="main",
        launch_uuid="u",
        status=status,
        created_at=created.isoformat(),
        last_error="HTTP 400: bad" if status == "failed" else None,
    )
    save_entry(state(root), entry)


def run(root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    done = run_cli(*args, cwd=root, env=env(**extra), timeout=60)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def check_lines(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The health output as {check name: state}."""
    out = {}
    for line in done.stdout.splitlines()[1:]:
        state_word, _, rest = line.partition(" ")
        out[rest.split(": ", 1)[0]] = state_word
    return out


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data = json.loads(done.stdout)
    assert data["exit_code"] == done.returncode
    return data


def states(data: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["state"] for c in data["checks"]}


@pytest.fixture
def rp() -> Iterator[RPServer]:
    with RPServer(api_keys={KEY}, projects={"proj"}) as server:
        yield server


@pytest.fixture
def healthy(project: Path, rp: RPServer) -> Path:
    """A project whose every check is OK: RP up, a run an hour ago, nothing in the outbox."""
    configure(project, rp)
    recent_run(project)
    return project


# --------------------------------------------------------------------------- health


def test_all_ok_exits_0_with_nagios_status_line_and_perfdata(healthy: Path) -> None:
    done = run(healthy, "health")
    assert done.returncode == 0, done.stdout
    first, *rest = done.stdout.splitlines()
    assert first.startswith("TESTVIPER OK - ")
    summary, _, perfdata = first.partition(" | ")
    assert "checks OK" in summary
    for label in ("'rp_main_latency'=", "'outbox'=0;", "'last_run_age'=", "'disk_free'="):
        assert label in perfdata
    lines = check_lines(done)
    for name in ("config", "rp:main", "outbox", "last_run", "disk", "state_size", "history"):
        assert lines[name] == "OK", done.stdout
    # No schedule on a developer's machine: listed, and it does not turn health UNKNOWN.
    assert lines["schedule"] == "UNKNOWN"
    assert "schedule: not installed on this host" in done.stdout
    assert len(rest) == len(lines)


def test_schedule_expected_warns_until_installed(healthy: Path, tmp_path: Path) -> None:
    """With health.expect_schedule, a missing schedule is a WARNING; installed, it is OK."""
    configure(healthy, health={"expect_schedule": True})
    missing = run(healthy, "health")
    assert missing.returncode == 1, missing.stdout
    assert check_lines(missing)["schedule"] == "WARNING"
    assert "fix: inv schedule.install" in missing.stdout
    write_files(
        healthy, {"ops/schedules.yaml": "schedules:\n  sync: {task: sync, cron: '*/15 * * * *'}\n"}
    )
    units = tmp_path / "units"
    units.mkdir()
    env = clean_env(HOME=str(tmp_path), TESTVIPER_NO_SYSTEMCTL="1")
    installed = run_cli(
        "schedule.install", "--user", "--unit-dir", str(units), cwd=healthy, env=env
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    done = run(healthy, "health")
    assert done.returncode == 0, done.stdout
    assert check_lines(done)["schedule"] == "OK"


def test_reportportal_states(healthy: Path, rp: RPServer) -> None:
    """Slow answer or server down: WARNING (runs wait in the outbox); wrong key, missing
    project, key not set: CRITICAL with a fix."""
    configure(healthy, health={"max_latency_ms": 150})
    rp.set_latency(0.2, match="settings")
    done = run(healthy, "health")
    assert (done.returncode, check_lines(done)["rp:main"]) == (1, "WARNING"), done.stdout
    assert "slow:" in done.stdout and done.stdout.startswith("TESTVIPER WARNING - rp:main")
    rp.clear_faults()

    rp.reject_key(KEY)
    done = run(healthy, "health")
    assert (done.returncode, check_lines(done)["rp:main"]) == (2, "CRITICAL")
    assert "API key in RP_API_KEY rejected" in done.stdout
    assert "fix: put a valid API key" in done.stdout
    rp.clear_faults()

    done = run(healthy, "health", RP_PROJECT="ghost")
    assert done.returncode == 2 and "project 'ghost' not found" in done.stdout

    done = run_cli("health", cwd=healthy, env=clean_env(AGENT_NO_ANALYTICS="1"))
    assert done.returncode == 2 and "API key variable RP_API_KEY is not set" in done.stdout

    rp.stop()
    done = run(healthy, "health")
    assert done.returncode == 1, done.stdout
    assert done.stdout.startswith("TESTVIPER WARNING - rp:main: ")
    assert "unreachable" in done.stdout and "wait in the outbox" in done.stdout


def test_hanging_instance_is_bounded_by_its_timeout(healthy: Path, rp: RPServer) -> None:
    """An instance that accepts TCP but never answers: WARNING within timeout (2 s) + 1 s.

    Measured inside the process (the checks) and from outside, where the time a normal
    run takes (interpreter start-up, imports) on this machine right now is subtracted.
    """
    started = time.monotonic()
    assert run(healthy, "health").returncode == 0
    baseline = time.monotonic() - started
    rp.hang(30)
    started = time.monotonic()
    done = run(healthy, "health", "--json")
    elapsed = time.monotonic() - started
    data = as_json(done)
    assert done.returncode == 1, done.stdout
    main = next(c for c in data["checks"] if c["name"] == "rp:main")
    assert main["state"] == "WARNING"
    assert "not answering" in main["summary"] and "within 2 s" in main["summary"]
    assert data["duration_s"] < 3.0, data["duration_s"]
    assert elapsed - baseline < 3.0, (elapsed, baseline)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], "OK"),
        ([1.0], "OK"),
        ([1.0, 7.0], "WARNING"),
        ([25.0, 2.0], "CRITICAL"),
    ],
)
def test_outbox_backlog_age(project: Path, entries: list[float], expected: str) -> None:
    recent_run(project)
    for hours_old in entries:
        outbox_entry(project, hours_old)
    done = run(project, "health", "--json")
    data = as_json(done)
    check = next(c for c in data["checks"] if c["name"] == "outbox")
    assert check["state"] == expected, check
    assert done.returncode == NAGIOS[expected]
    if entries:
        assert check["summary"].startswith(f"{len(entries)} undelivered, oldest")
    if expected != "OK":
        assert "inv sync" in check["fix"]


def test_rejected_outbox_entry_is_a_warning(project: Path) -> None:
    recent_run(project)
    outbox_entry(project, 0.5, status="failed")
    data = as_json(run(project, "health", "--json"))
    check = next(c for c in data["checks"] if c["name"] == "outbox")
    assert check["state"] == "WARNING" and "1 rejected" in check["summary"]


@pytest.mark.parametrize(
    ("hours_ago", "expected"), [(2, "OK"), (30, "WARNING"), (80, "CRITICAL"), (None, "WARNING")]
)
def test_last_run_age(project: Path, hours_ago: float | None, expected: str) -> None:
    if hours_ago is not None:
        recent_run(project, hours_ago)
    done = run(project, "health")
    assert check_lines(done)["last_run"] == expected, done.stdout
    assert done.returncode == NAGIOS[expected]
    if hours_ago is None:
        assert "no run recorded yet" in done.stdout and "inv run" in done.stdout


def test_last_run_interval_is_configurable(project: Path) -> None:
    recent_run(project, 30)
    configure(project, health={"max_run_age_hours": 48, "critical_run_age_hours": 96})
    assert run(project, "health").returncode == 0


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, "OK"),
        ({"min_free_mb": 10**12, "critical_free_mb": 0}, "WARNING"),
        ({"min_free_mb": 10**12, "critical_free_mb": 10**12}, "CRITICAL"),
    ],
)
def test_free_disk_space(project: Path, limits: dict[str, int], expected: str) -> None:
    recent_run(project)
    configure(project, health=limits)
    done = run(project, "health")
    assert check_lines(done)["disk"] == expected, done.stdout
    assert done.returncode == NAGIOS[expected]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ({}, "OK"),
        ({"max_state_mb": 0.01}, "WARNING"),
        ({"max_state_mb": 0.01, "critical_state_mb": 0.02}, "CRITICAL"),
    ],
)
def test_state_dir_size(project: Path, limits: dict[str, float], expected: str) -> None:
    recent_run(project)
    (state(project) / "reports").mkdir()
    (state(project) / "reports" / "big.json").write_bytes(b"x" * 30_000)
    configure(project, health=limits)
    done = run(project, "health")
    assert check_lines(done)["state_size"] == expected, done.stdout
    assert done.returncode == NAGIOS[expected]
    if expected != "OK":
        assert "inv cleanup --dry-run" in done.stdout


def test_corrupted_history_is_critical(project: Path) -> None:
    recent_run(project)
    db = state(project) / "history.sqlite"
    for leftover in db.parent.glob("history.sqlite-*"):
        leftover.unlink()
    db.write_bytes(os.urandom(8192))
    done = run(project, "health")
    lines = check_lines(done)
    assert lines["history"] == "CRITICAL", done.stdout
    assert "inv restore" in done.stdout
    assert lines["last_run"] == "UNKNOWN"  # cannot be read; the history line says why
    assert done.returncode == 2
    assert done.stdout.startswith("TESTVIPER CRITICAL - history: ")


def test_damaged_page_fails_quick_check(project: Path) -> None:
    """A database that opens but has a damaged b-tree page: quick_check reports it."""
    import sqlite3

    recent_run(project)
    db = state(project) / "history.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):  # leave page 1 (the schema) intact
        data[offset : offset + 64] = b"\xff" * 64
    db.write_bytes(bytes(data))
    done = run(project, "health")
    assert check_lines(done)["history"] == "CRITICAL", done.stdout


def test_server_history_without_driver_is_critical_and_hides_the_password(
    project: Path,
) -> None:
    configure(project, history={"url": "postgresql://tv:hunter2-pw@127.0.0.1:1/hist"})
    done = run(project, "health")
    lines = check_lines(done)
    assert lines["history"] == "CRITICAL", done.stdout
    assert "install the database driver for postgresql" in done.stdout
    assert "hunter2-pw" not in done.stdout + done.stderr
    assert done.returncode == 2


def test_config_error_is_critical_with_the_message(project: Path) -> None:
    bad = project / "bad.yaml"
    bad.write_text("compnents: {}\n")
    done = run(project, "health", "--config", str(bad))
    assert done.returncode == 2, done.stdout
    first = done.stdout.splitlines()[0]
    assert first.startswith("TESTVIPER CRITICAL - config: ")
    assert "did you mean 'components'" in first
    done = run(project, "health", "--config", str(project / "missing.yaml"))
    assert done.returncode == 2 and "no such config file" in done.stdout
    data = as_json(run(project, "health", "--json", "--config", str(bad)))
    assert data["state"] == "CRITICAL" and states(data) == {"config": "CRITICAL"}


def test_missing_source_dir_is_critical_but_other_checks_still_run(project: Path) -> None:
    recent_run(project)
    configure(project, components={"ghost": {"source": ["nowhere"], "tests": []}})
    done = run(project, "health")
    lines = check_lines(done)
    assert lines["config"] == "CRITICAL" and "no such directory 'nowhere'" in done.stdout
    assert lines["history"] == "OK" and lines["last_run"] == "OK"
    assert done.returncode == 2


INJECT = """
import sys
from testviper.ops import health
from testviper.cli import build_program

def boom(*args, **kwargs):
    raise RuntimeError("injected failure")

target = sys.argv[1]
if target == "everything":
    health.run_health = boom
    from testviper.ops import diagnose
    diagnose.run_diagnose = boom
else:
    setattr(health, target, boom)
build_program().run(["testviper", *sys.argv[2:]])
"""


def inject(root: Path, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", INJECT, target, *args],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unexpected_exception_is_unknown_exit_3_without_traceback(project: Path) -> None:
    recent_run(project)
    for command in ("health", "diagnose"):
        done = inject(project, "everything", command)
        assert done.returncode == 3, (done.stdout, done.stderr)
        assert done.stdout.startswith("TESTVIPER UNKNOWN - internal: internal error: RuntimeError")
        assert "Traceback" not in done.stdout + done.stderr
    done = inject(project, "everything", "health", "--json")
    assert done.returncode == 3 and json.loads(done.stdout)["state"] == "UNKNOWN"


def test_one_failing_check_is_unknown_and_the_others_still_report(project: Path) -> None:
    recent_run(project)
    done = inject(project, "check_disk", "health")
    assert done.returncode == 3, done.stdout
    assert "UNKNOWN disk: could not check: RuntimeError: injected failure" in done.stdout
    assert "OK history:" in done.stdout


def test_json_shape(healthy: Path) -> None:
    done = run(healthy, "health", "--json")
    data = as_json(done)
    assert done.returncode == 0
    assert set(data) >= {"service", "state", "status", "exit_code", "summary", "checks"}
    assert (data["service"], data["state"], data["status"]) == ("TESTVIPER", "OK", "pass")
    for check in data["checks"]:
        assert set(check) == {"name", "state", "summary", "details", "fix", "perfdata", "counted"}
        assert check["state"] in NAGIOS
    assert {c["name"] for c in data["checks"] if not c["counted"]} == {"schedule"}
    assert done.stderr == ""


# --------------------------------------------------------------------------- diagnose


def test_diagnose_ok_and_each_extra_check(healthy: Path, rp: RPServer) -> None:
    done = run(healthy, "diagnose", "--json")
    data = as_json(done)
    found = states(data)
    assert done.returncode == 0, json.dumps(data, indent=1)
    for name in (
        "config",
        "dependencies",
        "environment",
        "permissions",
        "coverage_sources",
        "rp:main",
        "trace:main",
        "outbox",
        "last_run",
        "disk",
        "state_size",
        "history",
    ):
        assert found[name] == "OK", name
    trace = next(c for c in data["checks"] if c["name"] == "trace:main")
    assert [line.split()[0] for line in trace["details"]] == ["dns", "tcp", "http", "auth"]
    assert all(" ms " in line for line in trace["details"])
    deps = next(c for c in data["checks"] if c["name"] == "dependencies")
    assert any(line.startswith("invoke ") for line in deps["details"])
    text = run(healthy, "diagnose")
    assert text.returncode == 0 and "[✓] trace:main: dns ok" in text.stdout
    assert text.stdout.rstrip().endswith("diagnose: no problems found in 13 checks")


def test_diagnose_env_file_0644_warns_with_chmod_fix(healthy: Path) -> None:
    dotenv = healthy / ".env"
    dotenv.write_text(f"OTHER_KEY={KEY}x\n")
    dotenv.chmod(0o644)
    done = run(healthy, "diagnose")
    assert done.returncode == 1, done.stdout
    assert "[!] permissions: .env is group/world readable" in done.stdout
    assert "fix: chmod 600 .env" in done.stdout
    dotenv.chmod(0o600)
    done = run(healthy, "diagnose")
    assert done.returncode == 0 and "[✓] permissions" in done.stdout


def test_diagnose_path_maps_a_test_to_its_component(healthy: Path) -> None:
    done = run(healthy, "diagnose", "--path", "tests/arith/test_arith.py::test_add")
    assert "[✓] path: tests/arith/test_arith.py::test_add -> component arith" in done.stdout
    assert done.returncode == 0
    data = as_json(run(healthy, "diagnose", "--json", "--path", "tests/text"))
    assert data["path"] == {"path": "tests/text", "component": "text"}
    done = run(healthy, "diagnose", "--path", "tests/other/test_x.py")
    assert done.returncode == 1
    assert "[!] path: tests/other/test_x.py maps to no component" in done.stdout
    assert "fix: add 'tests/other/test_x.py'" in done.stdout


def test_diagnose_reports_the_failing_step_of_the_trace(healthy: Path, rp: RPServer) -> None:
    rp.reject_key(KEY)
    done = run(healthy, "diagnose")
    assert done.returncode == 2
    assert "[✗] trace:main: auth failed" in done.stdout
    assert "fix: generate a new API key in ReportPortal" in done.stdout
    rp.clear_faults()
    rp.hang(30)
    done = run(healthy, "diagnose")
    assert "[✗] trace:main: http failed: no answer within 2.0 s" in done.stdout
    assert "accepts connections but does not answer HTTP" in done.stdout
    rp.clear_faults()
    rp.stop()
    done = run(healthy, "diagnose")
    assert "[✗] trace:main: tcp failed" in done.stdout and "nothing listens on" in done.stdout


def test_diagnose_missing_key_and_missing_source(healthy: Path) -> None:
    configure(healthy, coverage={"source": ["./lib"]})
    done = run_cli("diagnose", cwd=healthy, env=clean_env(AGENT_NO_ANALYTICS="1"))
    assert done.returncode == 2, done.stdout
    assert "[✗] environment: RP_API_KEY (key of instance main) not set" in done.stdout
    assert "fix: export RP_API_KEY=<key>" in done.stdout
    assert "[✗] coverage_sources: coverage.source: './lib' not found" in done.stdout


def test_secrets_never_printed(healthy: Path, rp: RPServer) -> None:
    """The key: set in the environment and .env, accepted or rejected, text or JSON."""
    (healthy / ".env").write_text(f"RP_API_KEY={KEY}\nTV_EXTRA={KEY}-2\n")
    (healthy / ".env").chmod(0o600)
    outputs = []
    for rejected in (False, True):
        if rejected:
            rp.reject_key(KEY)
        for args in (("health",), ("health", "--json"), ("diagnose",), ("diagnose", "--json")):
            done = run(healthy, *args)
            outputs.append(done.stdout + done.stderr)
    assert all(KEY not in out for out in outputs)
    assert f"RP_API_KEY: set ({len(KEY)} chars) (environment)" in outputs[2]
    assert f"TV_EXTRA: set ({len(KEY) + 2} chars) (.env)" in outputs[2]


def test_tls_handshake_failure_is_reported(rp: RPServer) -> None:
    """https:// to a plain-HTTP port: the trace stops at TLS with a fix."""
    inst = Instance(name="t", endpoint=f"https://127.0.0.1:{rp.port}", project="proj", timeout=2)
    steps, fix = diagnose.trace_instance(inst)
    assert [(s.name, s.ok) for s in steps] == [("dns", True), ("tcp", True), ("tls", False)]
    assert fix is not None and "TLS handshake" in fix


def test_dependency_states(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = diagnose._parse_requirement
    monkeypatch.setattr(diagnose, "_requirements", lambda: [parse("invoke>=3.0,<4")])
    assert diagnose.check_dependencies().state == "OK"
    monkeypatch.setattr(diagnose, "_requirements", lambda: [parse("invoke>=99")])
    found = diagnose.check_dependencies()
    assert found.state == "WARNING" and found.fix == "pip install 'invoke>=99'"
    monkeypatch.setattr(diagnose, "_requirements", lambda: [parse("no-such-dist-xyz>=1")])
    found = diagnose.check_dependencies()
    assert found.state == "CRITICAL" and "no-such-dist-xyz" in found.fix
    assert diagnose._parse_requirement('psutil>=5.9; extra == "dev"') is None


def test_simple_requirement_parser_without_packaging() -> None:
    req = diagnose._parse_simple("SQLAlchemy<3,>=2.0.36")
    assert req is not None
    assert req.satisfied("2.1.9") and not req.satisfied("3.0.0") and not req.satisfied("2.0.1")
    assert diagnose._parse_simple('psutil<8,>=5.9; extra == "dev"') is None


def test_worst_state_order() -> None:
    """CRITICAL > WARNING > UNKNOWN > OK; a not-available check is not judged."""
    check = health.Check
    report = health.Report([check("a", "UNKNOWN", "x"), check("b", "WARNING", "y")])
    assert (report.state, report.exit_code) == ("WARNING", 1)
    report = health.Report([check("a", "OK", "x"), check("s", "UNKNOWN", "n/a", counted=False)])
    assert (report.state, report.exit_code) == ("OK", 0)
    report = health.Report([check("a", "OK", "x|y\nz")])
    assert report.nagios().splitlines()[1] == "OK a: x/y z"


def test_inv_binary_runs_health(healthy: Path) -> None:
    """`inv health` (through tasks.py) behaves like the console script."""
    tasks = healthy / "tasks.py"
    tasks.write_text((REPO / "tasks.py").read_text())
    done = run_cli("health", cwd=healthy, env=env(), binary="inv")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("TESTVIPER OK - ")
    assert (BIN / "inv").exists()
