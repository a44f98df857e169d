"""``rotate-keys`` through the real CLI against the test ReportPortal server.

The new key goes in on stdin (or a named variable): it must end up in ``.env`` and
nowhere else, neither in the output, the history database nor the command line.
"""

import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, clean_env, write_files
from rp_server import RPServer

from testviper.ops.keys import updated_dotenv

OLD = "ci-old_b2xkLWtleS0xMjM0NTY3ODkw"
NEW = "ci-new_bmV3LWtleS05ODc2NTQzMjEw"
OTHER = "ci-other_b3RoZXIta2V5LWFiY2RlZg"
ENV_TEXT = (
    "# ReportPortal keys for CI\n"
    "export HTTP_PROXY=\n"
    f"RP_API_KEY={OLD}\n"
    "\n"
    "# the staging instance\n"
    "STAGING_KEY='quoted value # not a comment'\n"
)


def fp(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:6]


@pytest.fixture
def rp() -> Iterator[RPServer]:
    with RPServer(api_keys={OLD, NEW}, projects={"proj"}) as server:
        yield server


def make_project(
    root: Path, rp: RPServer, env_text: str | None = ENV_TEXT, extra: str = ""
) -> Path:
    write_files(
        root,
        {
            "testviper.yaml": f"""
                project: {{name: keys}}
                reportportal:
                  {extra}
                  instances:
                    - {{name: main, endpoint: '{rp.url}', project: proj, retries: 0, timeout: 5}}
                    - {{name: staging, endpoint: '{rp.url}', project: proj,
                        api_key_env: STAGING_KEY, enabled: false}}
            """
        },
    )
    if env_text is not None:
        env = root / ".env"
        env.write_text(env_text)
        env.chmod(0o600)
    return root


@pytest.fixture
def proj(tmp_path: Path, rp: RPServer) -> Path:
    return make_project(tmp_path / "proj", rp)


def env_for(**extra: str) -> dict[str, str]:
    env = clean_env(AGENT_NO_ANALYTICS="1", **extra)
    if "GITHUB_ACTIONS" not in extra:
        env.pop("GITHUB_ACTIONS", None)
    return env


def rotate(
    root: Path, *args: str, key: str | None = NEW, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``testviper rotate-keys ARGS`` with ``key`` on stdin; the key is never an argument."""
    argv = [str(BIN / "testviper"), "rotate-keys", *args]
    for secret in (OLD, NEW, OTHER):
        assert secret not in " ".join(argv)
    return subprocess.run(
        argv,
        cwd=root,
        env=env or env_for(),
        input=key if key is not None else "",
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )


def rotations(root: Path) -> list[tuple]:
    with sqlite3.connect(root / ".testviper" / "history.sqlite") as con:
        return con.execute(
            "SELECT instance, variable, fingerprint, previous_fingerprint, overlap, old_key "
            "FROM key_rotations ORDER BY id"
        ).fetchall()


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: content and mode."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_no_leak(root: Path, done: subprocess.CompletedProcess[str], *keys: str) -> None:
    for key in keys:
        assert key not in done.stdout + done.stderr
        for path in (root / ".testviper").rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path


def test_rotation_writes_env_and_records_fingerprints(proj: Path, rp: RPServer) -> None:
    """A good key replaces the old one in place; the old one stays as _PREVIOUS; 0600 kept."""
    done = rotate(proj, "--instance", "main")
    assert done.returncode == 0, done.stderr
    env = proj / ".env"
    assert env.read_text() == ENV_TEXT.replace(
        f"RP_API_KEY={OLD}\n", f"RP_API_KEY={NEW}\nRP_API_KEY_PREVIOUS={OLD}\n"
    )
    assert env.stat().st_mode & 0o777 == 0o600
    assert f"new key {fp(NEW)} (was {fp(OLD)}) verified" in done.stdout
    assert "RP_API_KEY_PREVIOUS" in done.stdout
    assert rotations(proj) == [("main", "RP_API_KEY", fp(NEW), fp(OLD), 1, "kept")]
    verified = [(r.method, r.endpoint, r.status) for r in rp.requests]
    assert verified == [("GET", "users", 200), ("GET", "settings", 200)]
    assert not list(proj.glob(".env.*"))  # no temp file left
    assert_no_leak(proj, done, OLD, NEW)


@pytest.mark.parametrize("case", ["unknown key", "no access to project", "server down"])
def test_rejected_key_changes_nothing(tmp_path: Path, rp: RPServer, case: str) -> None:
    """A key the server refuses (or cannot check) leaves every file as it was: exit 1."""
    proj = make_project(tmp_path / "proj", rp)
    assert rotate(proj, "--instance", "main").returncode == 0  # history exists already
    before = tree(proj)
    key, message = OTHER, "rejected the new key (HTTP 401"
    if case == "no access to project":
        rp.api_keys.add(OTHER)
        rp.projects = {"elsewhere"}
        message = "did not accept the new key for the settings of project proj (HTTP 404"
    elif case == "server down":
        rp.stop()
        message = "cannot reach instance main"
    done = rotate(proj, "--instance", "main", key=key)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert message in done.stderr and "nothing changed" in done.stderr
    assert "Traceback" not in done.stderr
    assert tree(proj) == before
    assert_no_leak(proj, done, OTHER)


def test_history_failure_puts_the_old_env_back(tmp_path: Path, rp: RPServer) -> None:
    """The rotation cannot be recorded (history unusable): .env returns to the old bytes."""
    proj = make_project(tmp_path / "proj", rp)
    (proj / "hist").mkdir()
    with (proj / "testviper.yaml").open("a") as handle:
        handle.write(f"history: {{url: 'sqlite:///{proj / 'hist'}'}}\n")
    before = (proj / ".env").read_bytes()
    done = rotate(proj, "--instance", "main")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert (proj / ".env").read_bytes() == before
    assert (proj / ".env").stat().st_mode & 0o777 == 0o600
    assert not list(proj.glob(".env.*"))


def test_no_overlap_drops_the_old_key(proj: Path) -> None:
    """--no-overlap: no _PREVIOUS line, and a stale one from an earlier rotation goes too."""
    env = proj / ".env"
    env.write_text(ENV_TEXT + "RP_API_KEY_PREVIOUS=stale-key-000\n")
    done = rotate(proj, "--instance", "main", "--no-overlap")
    assert done.returncode == 0, done.stderr
    assert env.read_text() == ENV_TEXT.replace(OLD, NEW)
    assert "stays valid on the server until revoked" in done.stdout
    assert rotations(proj) == [("main", "RP_API_KEY", fp(NEW), fp(OLD), 0, "kept")]


def test_revoke_old_deletes_it_on_the_server(proj: Path, rp: RPServer) -> None:
    """--revoke-old finds the old key's id by its name, deletes it, and checks it is dead."""
    done = rotate(proj, "--instance", "main", "--revoke-old")
    assert done.returncode == 0, done.stderr
    assert OLD not in rp.api_keys and NEW in rp.api_keys
    assert "revoked the old key 'ci-old'" in done.stdout
    assert (proj / ".env").read_text() == ENV_TEXT.replace(OLD, NEW)  # no dead _PREVIOUS
    assert rotations(proj)[0][-1] == "revoked"
    deletes = [r.path for r in rp.requests if r.method == "DELETE"]
    assert deletes == ["/api/users/1/api-keys/101"]  # ids by key: ci-new 100, ci-old 101
    assert_no_leak(proj, done, OLD, NEW)


def test_revoke_old_without_server_support_prints_the_manual_step(
    tmp_path: Path,
) -> None:
    """No API key endpoints on the server: the rotation stands, the manual step is shown."""
    with RPServer(api_keys={OLD, NEW}, api_key_endpoints=False) as rp:
        proj = make_project(tmp_path / "proj", rp)
        done = rotate(proj, "--instance", "main", "--revoke-old")
        assert OLD in rp.api_keys
    assert done.returncode == 0, done.stderr
    assert "no API key endpoints (HTTP 404)" in done.stderr
    assert f"Profile > API Keys and delete the key with fingerprint {fp(OLD)}" in done.stderr
    assert f"RP_API_KEY_PREVIOUS={OLD}\n" in (proj / ".env").read_text()
    assert rotations(proj)[0][-1] == "manual"


def test_revoke_failing_on_the_server_keeps_the_rotation(proj: Path, rp: RPServer) -> None:
    """A 500 from the API key list: the new key is in place, the old one kept, step printed."""
    rp.fail_always(500, match="list_api_keys")
    done = rotate(proj, "--instance", "main", "--revoke-old")
    assert done.returncode == 0, done.stderr
    assert "listing the API keys failed (HTTP 500)" in done.stderr
    assert f"RP_API_KEY={NEW}\nRP_API_KEY_PREVIOUS={OLD}\n" in (proj / ".env").read_text()
    assert OLD in rp.api_keys and rotations(proj)[0][-1] == "manual"


def test_github_actions_mask_is_the_only_place_the_key_appears(proj: Path) -> None:
    """Under GitHub Actions the first output line masks the new key; it is printed nowhere else."""
    done = rotate(proj, "--instance", "main", env=env_for(GITHUB_ACTIONS="true"))
    assert done.returncode == 0, done.stderr
    first, rest = done.stdout.split("\n", 1)
    assert first == f"::add-mask::{NEW}"
    assert NEW not in rest + done.stderr and OLD not in done.stdout + done.stderr


def test_key_from_a_named_variable(proj: Path) -> None:
    """--from-env takes a variable's name; an unset one is exit 2 with nothing changed."""
    done = rotate(
        proj,
        "--instance",
        "main",
        "--from-env",
        "NEW_RP_KEY",
        key=None,
        env=env_for(NEW_RP_KEY=NEW),
    )
    assert done.returncode == 0, done.stderr
    assert f"RP_API_KEY={NEW}\n" in (proj / ".env").read_text()
    before = tree(proj)
    done = rotate(proj, "--instance", "main", "--from-env", "UNSET_KEY_VAR", key=None)
    assert done.returncode == 2
    assert "--from-env UNSET_KEY_VAR: no key given" in done.stderr
    assert tree(proj) == before


def test_no_option_takes_the_key(proj: Path) -> None:
    """The only options with a value name a config, an instance or a variable."""
    done = subprocess.run(
        [str(BIN / "testviper"), "rotate-keys", "--help"],
        cwd=proj,
        env=env_for(),
        text=True,
        capture_output=True,
        check=True,
    )
    options = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  --")]
    with_value = sorted(o.split("=")[0] for o in options if "=" in o)
    assert with_value == ["--config", "--from-env", "--instance"]
    assert not any("key" in o.split("=")[0] for o in options if o not in ("--revoke-old",))


@pytest.mark.parametrize(
    ("args", "key", "fragment"),
    [
        (["--instance", "ghost"], NEW, "--instance ghost: no such ReportPortal instance"),
        ([], NEW, "--instance: name the ReportPortal instance"),
        (["--instance", "main"], "", "stdin: no key given"),
        (["--instance", "main"], "two words", "stdin: not an API key"),
        (["--instance", "main"], OLD, "already holds this key"),
        (["--instance", "main", "--stdin", "--from-env", "X"], NEW, "not both"),
    ],
)
def test_bad_input_is_exit_2_and_changes_nothing(
    proj: Path, args: list[str], key: str, fragment: str
) -> None:
    """Usage errors: one line, exit 2, no file touched, and the input never echoed."""
    before = tree(proj)
    done = rotate(proj, *args, key=key)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("testviper: error: ") and fragment in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert {k: v for k, v in tree(proj).items() if "locks" not in k} == before
    assert "two words" not in done.stderr and (not key or key not in done.stderr)


def test_missing_env_file_is_created_0600(tmp_path: Path, rp: RPServer) -> None:
    """No .env yet: it is created with only the key, mode 0600, and no _PREVIOUS."""
    proj = make_project(tmp_path / "proj", rp, env_text=None)
    done = rotate(proj, "--instance", "main")
    assert done.returncode == 0, done.stderr
    env = proj / ".env"
    assert env.read_text() == f"RP_API_KEY={NEW}\n"
    assert env.stat().st_mode & 0o777 == 0o600
    assert "new file, mode 0600" in done.stdout
    assert rotations(proj) == [("main", "RP_API_KEY", fp(NEW), None, 0, "none")]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_owner_is_kept_when_run_as_root(proj: Path) -> None:
    """Rewritten by root, .env still belongs to the service user that owned it."""
    env = proj / ".env"
    os.chown(env, 65534, 65534)
    assert rotate(proj, "--instance", "main").returncode == 0
    st = env.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65534, 0o600)


def test_check_reports_ages_and_warns_past_the_limit(tmp_path: Path, rp: RPServer) -> None:
    """--check: age from .env's mtime before any rotation, from history after; exit 1 if too old."""
    proj = make_project(tmp_path / "proj", rp, extra="max_key_age_days: 30")
    old = time.time() - 40 * 86400
    os.utime(proj / ".env", (old, old))
    done = rotate(proj, "--check", key=None)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "main: RP_API_KEY 40 days old" in done.stdout and ".env modified" in done.stdout
    assert "staging: STAGING_KEY" in done.stdout
    assert "the key of main is older than reportportal.max_key_age_days (30)" in done.stderr
    assert not (proj / ".testviper").exists()  # a check creates no state
    assert rotate(proj, "--instance", "main").returncode == 0
    os.utime(proj / ".env", (old, old))
    done = rotate(proj, "--check", "--instance", "main", key=None)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("main: RP_API_KEY 0 days old") and "last rotation" in done.stdout
    assert "staging" not in done.stdout and done.stderr == ""


@pytest.mark.parametrize(
    ("text", "previous", "expected"),
    [
        ("A=1\nK=old\nB=2", "old", "A=1\nK=new\nK_PREVIOUS=old\nB=2\n"),
        ("export K=old\r\n# c\r\n", None, "export K=new\r\n# c\r\n"),
        ("K=old\nK_PREVIOUS=x\nK=dup\n", "old", "K=new\nK_PREVIOUS=old\n"),
        ("KEY2=a\n", None, "KEY2=a\nK=new\n"),
        ("", "old", "K=new\nK_PREVIOUS=old\n"),
    ],
)
def test_dotenv_update_keeps_other_lines(text: str, previous: str | None, expected: str) -> None:
    """In-place replacement, line endings kept, later duplicates dropped, prefixes respected."""
    assert updated_dotenv(text, "K", "new", previous) == expected
