"""The pytest process ``inv run`` starts before it reads the configuration.

It must run the tests exactly as ``python -m pytest`` would, never hold a ReportPortal
key (not even in the environment it was started with), and run nothing when the runner
gives up first. Which way pytest was started shows in the test process's environment at
start (``/proc/self/environ``): the prestarted process gets ``TESTVIPER_RUN_ID`` only
with its request, the ordinary start has it from the beginning.
"""

import json
import os
import sys
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import BIN, Cli, clean_env, write_files

from testviper.runner import starter as starter_module
from testviper.runner.starter import Starter, early, guessed_secrets, prestart

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="reads /proc/self/environ"
)

ENV_PROBE = {
    "tests/test_env_probe.py": """
        import json
        import os
        import sys


        def test_env_probe():
            with open("/proc/self/environ", "rb") as handle:
                at_start = [e.split(b"=", 1)[0].decode() for e in handle.read().split(b"\\0") if e]
            with open(os.environ["PROBE_OUT"], "w") as out:
                json.dump(
                    {
                        "at_start": at_start,
                        "now": sorted(os.environ),
                        "cwd": os.getcwd(),
                        "path": sys.path,
                        "argv0": sys.argv[0],
                    },
                    out,
                )
    """,
}


def probe(project: Path, cli: Cli, tmp_path: Path, **env: str) -> dict:
    write_files(project, ENV_PROBE)
    out = tmp_path / "probe.json"
    done = cli("run", cwd=project, env=clean_env(PROBE_OUT=str(out), **env))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
    return json.loads(out.read_text())


def set_key(project: Path, env_name: str) -> None:
    path = project / "testviper.yaml"
    data = yaml.safe_load(path.read_text())
    data["reportportal"] = {
        "instances": [
            {
                "name": "a",
                "endpoint": "http://127.0.0.1:9",
                "project": "p",
                "api_key_env": env_name,
                "enabled": False,  # nothing to deliver: the key only has to be withheld
            }
        ]
    }
    path.write_text(yaml.safe_dump(data))


def test_prestarted_process_runs_the_tests_without_the_key(
    project: Path, cli: Cli, tmp_path: Path
) -> None:
    set_key(project, "RP_KEY_A")
    seen = probe(project, cli, tmp_path, RP_KEY_A="key-a-5f0c1d9e8b7a")
    assert "TESTVIPER_RUN_ID" not in seen["at_start"]  # the prestarted process ran them
    assert "TESTVIPER_RUN_ID" in seen["now"] and "COVERAGE_FILE" in seen["now"]
    assert "RP_KEY_A" not in seen["at_start"] and "RP_KEY_A" not in seen["now"]
    assert "PROBE_OUT" in seen["at_start"]  # everything else was there from the start
    # As `python -m pytest` run from the project root.
    assert seen["cwd"] == str(project.resolve()) and seen["cwd"] in seen["path"]
    assert seen["argv0"].endswith(os.path.join("pytest", "__main__.py"))


def test_wrong_guess_starts_pytest_the_ordinary_way(
    project: Path, cli: Cli, tmp_path: Path
) -> None:
    """A config string that names a set variable (here the project name) makes the guess
    withhold a variable the run keeps: that process is dropped, pytest starts normally."""
    path = project / "testviper.yaml"
    path.write_text(path.read_text().replace("name: calc", "name: CALC_LABEL"))
    seen = probe(project, cli, tmp_path, CALC_LABEL="yes", RP_API_KEY="key-d-0a1b2c3d4e5f")
    assert "TESTVIPER_RUN_ID" in seen["at_start"]  # the ordinary start
    assert "CALC_LABEL" in seen["at_start"]
    assert "RP_API_KEY" not in seen["at_start"] and "RP_API_KEY" not in seen["now"]


FAKE_PLUGIN = {
    "site/fakeplug-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n",
    "site/fakeplug-1.0.dist-info/entry_points.txt": "[pytest11]\nfakeplug = fakeplug\n",
    "site/fakeplug.py": """
        import json
        import os

        # Imported by pytest itself, once the run's request has set its variables.
        IMPORTED_IN_RUN = "TESTVIPER_RUN_ID" in os.environ


        def pytest_configure(config):
            with open(os.environ["PLUGIN_OUT"], "w") as out:
                json.dump({"imported_in_run": IMPORTED_IN_RUN}, out)
    """,
}


@pytest.mark.parametrize("autoload", [True, False], ids=["autoload", "no-autoload"])
def test_installed_plugins_are_left_to_pytest(
    project: Path, cli: Cli, tmp_path: Path, autoload: bool
) -> None:
    """The prestarted process does not import installed plugins ahead: pytest imports
    them (marked for assertion rewriting first) and registers them. With autoloading
    off (PYTEST_DISABLE_PLUGIN_AUTOLOAD) none is loaded, and coverage still works: the
    run names pytest-cov itself."""
    write_files(tmp_path, FAKE_PLUGIN)
    out = tmp_path / "plugin.json"
    env = {"PYTHONPATH": str(tmp_path / "site"), "PLUGIN_OUT": str(out)}
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    done = cli("run", cwd=project, env=clean_env(**env))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "coverage:" in done.stdout
    if autoload:
        assert json.loads(out.read_text()) == {"imported_in_run": True}
    else:
        assert not out.exists()


def test_config_error_runs_nothing(project: Path, cli: Cli, tmp_path: Path) -> None:
    write_files(project, ENV_PROBE)
    out = tmp_path / "probe.json"
    path = project / "testviper.yaml"
    path.write_text(path.read_text() + "tresholds: {}\n")
    done = cli("run", cwd=project, env=clean_env(PROBE_OUT=str(out)))
    assert done.returncode == 2
    assert done.stderr.startswith("testviper: error:") and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_closed_pipe_exits_without_running(tmp_path: Path, monkeypatch) -> None:
    """The runner died before its request (kill -9): the process exits quietly."""
    write_files(tmp_path, {"tests/test_x.py": "def test_x():\n    open('ran', 'w')\n"})
    monkeypatch.chdir(tmp_path)
    starter = prestart(None)
    assert starter is not None
    os.close(starter.pipe)
    assert starter.proc.wait(timeout=60) == 0
    assert not (tmp_path / "ran").exists()


def test_cancel_stops_a_waiting_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    starter = prestart(None)
    assert isinstance(starter, Starter)
    starter.cancel()
    assert starter.proc.returncode is not None and starter.pipe == -1
    starter.cancel()  # twice is harmless


def test_guess_and_usable(monkeypatch) -> None:
    for name in ("RP_API_KEY", "KEY_ONE", "KEY_TWO", "HOME_LIKE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEY_ONE", "1")
    monkeypatch.setenv("RP_API_KEY", "2")
    raw = {
        "reportportal": {"instances": [{"api_key_env": "KEY_ONE"}, {"api_key_env": "KEY_TWO"}]},
        "project": {"name": "not an env name"},
    }
    # KEY_TWO is not set, so withholding it changes nothing.
    assert guessed_secrets(raw, "RP_API_KEY") == {"KEY_ONE", "RP_API_KEY"}
    starter = Starter(proc=None, pipe=-1, removed=frozenset({"KEY_ONE", "RP_API_KEY"}))  # type: ignore[arg-type]
    assert starter.usable(["KEY_ONE", "KEY_TWO", "RP_API_KEY"])
    assert not starter.usable(["KEY_ONE"])  # RP_API_KEY was withheld but the run keeps it
    monkeypatch.setenv("KEY_TWO", "3")
    assert not starter.usable(["KEY_ONE", "KEY_TWO", "RP_API_KEY"])  # KEY_TWO was not


def test_starter_imports_only_the_standard_library() -> None:
    """It runs inside the user's test process before pytest: no TestViper dependencies."""
    import subprocess

    code = (
        "import sys, testviper.runner.starter; "
        "print(sorted(m for m in ('pydantic', 'yaml', 'sqlalchemy', 'invoke') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "used"),
    [
        (["run"], True),
        (["run", "--live", "--", "-x", "-c", "pytest.ini"], True),  # after -- is pytest's
        (["run", "-c", "other.yaml"], False),
        (["run", "--config=other.yaml"], False),
        (["run", "--help"], False),
        (["runs"], False),
        (["-e", "run"], False),
        (["sync"], False),
    ],
)
def test_console_script_starts_early_only_for_a_plain_run(
    tmp_path: Path, monkeypatch, argv: list[str], used: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    early(argv)
    started, starter_module._early = starter_module._early, None
    if started is not None:
        started.cancel()
    assert (started is not None) is used


def test_run_claims_the_early_process_only_for_the_same_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    early(["run"])
    first = starter_module._early
    assert first is not None
    assert prestart(None) is first and starter_module._early is None
    first.cancel()
    early(["run"])
    second = starter_module._early
    assert second is not None
    (tmp_path / "other.yaml").write_text("project: {name: other}\n")
    third = prestart(str(tmp_path / "other.yaml"))
    assert third is not None and third is not second
    assert second.proc.returncode is not None  # stopped, not left waiting
    third.cancel()


def test_unclaimed_early_process_is_stopped(project: Path, tmp_path: Path) -> None:
    """An option error ends `testviper run` before the task: its process goes too.

    Output goes to a file, not a pipe: a leftover holding the pipe open would make
    the caller wait for it, and exit by itself before anyone could look."""
    import subprocess

    marker = "TV_EARLY_MARKER"
    with (tmp_path / "out.txt").open("w") as out:
        done = subprocess.run(
            [str(BIN / "testviper"), "run", "--no-such-option"],
            cwd=project,
            env=clean_env(**{marker: "1"}),
            stdout=out,
            stderr=out,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "No idea what '--no-such-option' is" in (tmp_path / "out.txt").read_text()
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if (
                "testviper.runner.starter" in (proc.info["cmdline"] or [])
                and marker in proc.environ()
            ):
                left.append(proc)
        except psutil.Error:
            continue
    assert left == []
