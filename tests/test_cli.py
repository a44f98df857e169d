"""The real ``testviper`` and ``inv`` binaries: exit codes, one-line errors, the task surface."""

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, Cli, clean_env

from testviper import __version__
from testviper.history.store import open_history

SECRET = "sk-TOPSECRET-cli-9d8e7f"
TASKS = {
    "backup.create",
    "backup.list",
    "backup.verify",
    "cleanup",
    "restore",
    "rotate-keys",
    "run",
    "gate",
    "sync",
    "deliveries",
    "report",
    "health",
    "diagnose",
    "history.import-rp",
    "profile",
    "alert.test",
    "config.import-legacy",
    "config.init",
    "config.show",
    "config.validate",
    "runs.ingest",
    "runs.list",
    "runs.show",
    "schedule.check",
    "schedule.install",
    "schedule.render",
    "schedule.show",
    "schedule.uninstall",
    "rp.check",
    "rp.launches",
    "rp.cleanup",
    "daily",
    "weekly",
    "monthly",
    "ci-status",
}


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2 with exactly one `testviper: error:` line on stderr, containing ``fragments``."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("testviper: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


BAD_CONFIGS = {
    "invalid-yaml": ("project:\n\tname: x\n", ["bad.yaml:2:1: invalid YAML"]),
    "top-level-list": ("- a\n- b\n", ["the top level must be a mapping"]),
    "typo": ("compnents: {}\n", ["did you mean 'components'"]),
    "wrong-type": ("coverage:\n  branch: maybe\n", ["coverage.branch", "'maybe'"]),
    "missing-source": (
        "components:\n  xradio:\n    source: [xradio/src]\n",
        ["components.xradio.source[0]: no such directory 'xradio/src'"],
    ),
    "http-endpoint": (
        "reportportal:\n  instances:\n"
        "  - {name: a, endpoint: 'http://rp.example.org', project: p}\n",
        ["reportportal.instances[0].endpoint: http:// is only allowed for loopback"],
    ),
    "history-url": ("history:\n  url: not a url\n", ["history.url", "'not a url'"]),
    "unknown-threshold": (
        "thresholds:\n  components:\n    ghost: {fail_under: 50}\n",
        ["thresholds.components.ghost"],
    ),
}


@pytest.mark.parametrize("command", ["config.validate", "run"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(project: Path, cli: Cli, case: str, command: str) -> None:
    """A bad config file makes validate and run exit 2 with one line and leave nothing behind."""
    text, fragments = BAD_CONFIGS[case]
    bad = project / "bad.yaml"
    bad.write_text(text)
    done = cli(command, "--config", str(bad), cwd=project)
    assert_one_line_error(done, str(bad), *fragments)
    assert done.stdout == ""
    assert not (project / ".testviper").exists(), "a failed start left state behind"


@pytest.mark.parametrize("command", ["config.validate", "run"])
def test_missing_config_file_exits_2(project: Path, cli: Cli, command: str) -> None:
    """--config naming a missing file exits 2 naming it, without falling back to the local one."""
    done = cli(command, "--config", "nope.yaml", cwd=project)
    assert_one_line_error(done, "nope.yaml: no such config file (from --config)")
    assert not (project / ".testviper").exists()


def test_missing_config_from_env_exits_2(project: Path, cli: Cli) -> None:
    """TESTVIPER_CONFIG naming a missing file exits 2 naming the variable."""
    env = clean_env(TESTVIPER_CONFIG=str(project / "gone.yaml"))
    done = cli("run", cwd=project, env=env)
    assert_one_line_error(done, "gone.yaml", "TESTVIPER_CONFIG")
    assert not (project / ".testviper").exists()


def test_good_config_validates(project: Path, cli: Cli) -> None:
    """The fixture project's own config validates (so the failures above are about the input)."""
    done = cli("config.validate", cwd=project)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout
        == f"{project / 'testviper.yaml'}: OK (2 components, 0 ReportPortal instances)\n"
    )


@pytest.fixture
def state_below_file(project: Path) -> Path:
    """The project with paths.state pointing below a regular file, so it cannot be created."""
    (project / "afile").write_text("not a directory\n")
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "paths:\n  state: afile/state\n")
    return project


@pytest.mark.parametrize("command", ["run", "runs"])
def test_unwritable_state_dir_names_paths_state(
    state_below_file: Path, cli: Cli, command: str
) -> None:
    """A state directory that cannot be created exits 2 with a message naming paths.state."""
    done = cli(command, cwd=state_below_file)
    assert_one_line_error(done, "paths.state", "afile/state")
    assert "collected" not in done.stdout, "pytest ran although the state dir is unusable"
    assert (state_below_file / "afile").read_text() == "not a directory\n"


@pytest.fixture
def locked_history(project: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """The project's history database, created, with an exclusive write lock held on it."""
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "history:\n  busy_timeout: 1\n")
    db = project / ".testviper" / "history.sqlite"
    open_history(f"sqlite:///{db}", busy_timeout=1).engine.dispose()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield project, holder
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def test_locked_history_fails_run_cleanly_then_recovers(
    locked_history: tuple[Path, sqlite3.Connection], cli: Cli
) -> None:
    """Another writer holding the history lock: `run` exits 2 with one line, then recovers."""
    project, holder = locked_history
    listed = cli("runs", cwd=project)
    # WAL mode: reading the history is not blocked by another writer.
    assert listed.returncode == 0, listed.stderr
    assert "no runs yet" in listed.stdout

    done = cli("run", cwd=project)
    assert_one_line_error(done, "locked", "history.busy_timeout", "history.sqlite")
    [orphan] = list((project / ".testviper" / "runs").iterdir())

    holder.execute("ROLLBACK")
    again = cli("run", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "3 passed" in again.stdout

    # The run that could not be stored is still on disk and can be stored now.
    ingested = cli("runs.ingest", str(orphan), cwd=project)
    assert ingested.returncode == 0, ingested.stderr
    rows = cli("runs", cwd=project).stdout.splitlines()[1:]
    assert len(rows) == 2 and all("complete" in row for row in rows)


def test_config_init_writes_valid_file_and_refuses_overwrite(tmp_path: Path, cli: Cli) -> None:
    """config.init writes a config that validates; without --force it keeps an existing file."""
    done = cli("config.init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "testviper.yaml"
    validated = cli("config.validate", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith(f"{config}: OK")

    config.write_text("project: {name: mine}\n")
    refused = cli("config.init", cwd=tmp_path)
    assert_one_line_error(refused, "testviper.yaml exists", "--force")
    assert config.read_text() == "project: {name: mine}\n"

    forced = cli("config.init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert config.read_text() != "project: {name: mine}\n"
    assert cli("config.validate", cwd=tmp_path).returncode == 0


def test_config_init_unwritable_target_is_one_line(tmp_path: Path, cli: Cli) -> None:
    """config.init to a path below a regular file exits 2 with one line, not a traceback."""
    (tmp_path / "afile").write_text("x")
    done = cli("config.init", "--path", "afile/testviper.yaml", cwd=tmp_path)
    assert_one_line_error(done, "afile/testviper.yaml")


def test_config_show_hides_secret(project: Path, cli: Cli) -> None:
    """config.show reports the API key as set, never printing its value."""
    config = project / "testviper.yaml"
    config.write_text(
        config.read_text()
        + "reportportal:\n  instances:\n"
        + "  - {name: main, endpoint: 'https://rp.example.org', project: calc}\n"
    )
    done = cli("config.show", cwd=project, env=clean_env(RP_API_KEY=SECRET))
    assert done.returncode == 0, done.stderr
    assert "api_key: set (from RP_API_KEY)" in done.stdout
    assert "endpoint: https://rp.example.org" in done.stdout
    assert "TOPSECRET" not in done.stdout + done.stderr
    assert done.stderr == f"# source: {config}\n"


def task_names(listing: dict[str, Any], prefix: str = "") -> set[str]:
    """Flatten invoke's JSON task listing into dotted task names."""
    names = {prefix + t["name"] for t in listing["tasks"]}
    for sub in listing["collections"]:
        names |= task_names(sub, f"{prefix}{sub['name']}.")
    return names


def json_listing(cli: Cli, binary: str) -> dict[str, Any]:
    """The task listing of ``binary`` (inv runs from the repository, where tasks.py is)."""
    done = cli("--list", "--list-format", "json", cwd=REPO, binary=binary)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_inv_and_testviper_list_the_same_tasks(cli: Cli) -> None:
    """`inv` (via tasks.py) and the `testviper` script expose the same task tree."""
    inv, tv = json_listing(cli, "inv"), json_listing(cli, "testviper")
    assert task_names(inv) == task_names(tv) == TASKS
    assert inv["collections"] == tv["collections"]
    assert inv["tasks"] == tv["tasks"]


@pytest.mark.parametrize("binary", ["inv", "testviper"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_help_renders(cli: Cli, binary: str, task: str) -> None:
    """Every task's --help renders with its usage and options, for both binaries."""
    done = cli("--help", task, cwd=REPO, binary=binary)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"[--core-opts] {task} " in done.stdout
    assert "Docstring:" in done.stdout


def test_short_flags_are_letters() -> None:
    """No option gets "-" as its short flag (Invoke would give it to --no-live)."""
    from testviper.tasks import ns

    def flags(collection: Any) -> Iterator[tuple[str, str]]:
        for name in collection.task_names:
            for arg in collection[name].get_arguments():
                yield from ((name, flag) for flag in arg.names if len(flag) == 1)

    short = list(flags(ns))
    assert ("run", "i") in short
    assert [(task, flag) for task, flag in short if not flag.isalpha()] == []


def test_runs_default_task_is_list(project: Path, cli: Cli) -> None:
    """`testviper runs` is `runs.list`."""
    done = cli("runs", cwd=project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no runs yet; `inv run` records one\n"


def test_version(cli: Cli, tmp_path: Path) -> None:
    """`testviper --version` prints the package version."""
    done = cli("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"TestViper {__version__}"


HEAVY = ("pydantic", "sqlalchemy", "coverage", "dotenv", "pytest", "_pytest", "filelock")
IMPORT_PROBE = """
import json, sys
import invoke
before = set(sys.modules)
from testviper.tasks import ns
import testviper.cli
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_task_tree_import_is_light(tmp_path: Path) -> None:
    """Importing the task tree (what `inv --list` does) loads nothing beyond testviper.tasks."""
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    added = json.loads(done.stdout)
    assert "testviper.tasks" in added
    assert not [m for m in added if m.split(".")[0] in HEAVY]
    extra = [m for m in added if m.split(".")[0] != "testviper"]
    assert extra == [], f"importing the task tree also imported {extra}"
    assert not [m for m in added if m.startswith(("testviper.config", "testviper.history"))]
    assert not [m for m in added if m.startswith("testviper.runner")]
