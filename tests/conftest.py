"""Shared fixtures: a throwaway project on disk and a way to run the real CLI on it."""

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent

PACKAGE = {
    "src/calc/__init__.py": "",
    "src/calc/arith.py": """
        def add(a, b):
            return a + b


        def div(a, b):
            if b == 0:
                raise ZeroDivisionError("b is zero")
            return a / b
    """,
    "src/calc/text.py": """
        def shout(s):
            if not s:
                return ""
            return s.upper() + "!"


        def never_called(x):
            if x:
                return 1
            return 2
    """,
    "pytest.ini": """
        [pytest]
        pythonpath = src
        testpaths = tests
        markers =
            smoke: quick checks
    """,
    "testviper.yaml": """
        project:
          name: calc
        coverage:
          source: [src]
        components:
          arith:
            source: [src/calc/arith.py]
            tests: [tests/arith]
          text:
            source: [src/calc/text.py]
            tests: [tests/text]
    """,
    "tests/arith/test_arith.py": """
        import pytest
        from calc.arith import add, div


        @pytest.mark.smoke
        def test_add():
            assert add(1, 2) == 3


        def test_div():
            assert div(6, 3) == 2
    """,
    "tests/text/test_text.py": """
        from calc.text import shout


        def test_shout():
            assert shout("hi") == "HI!"
    """,
}


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def run_pytest_process(runner_pid: int) -> list[psutil.Process]:
    """The pytest process(es) a ``testviper run`` process started: the prestarted one
    (``testviper.runner.starter``) or an ordinary ``python -m pytest`` with the journal."""
    return [
        p
        for p in psutil.Process(runner_pid).children(recursive=True)
        if "testviper.runner.starter" in p.cmdline()
        or any(a.startswith("--testviper-journal=") for a in p.cmdline())
    ]


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` with a throwaway identity; return its stdout."""
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A small project: package ``calc`` under src/, two components, passing tests."""
    root = tmp_path / "proj"
    write_files(root, PACKAGE)
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess, without the RP/TestViper variables of the host."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RP_", "TV_", "TESTVIPER_", "COVERAGE_", "PYTEST_"))
    }
    env.update(extra)
    return env


Cli = Callable[..., subprocess.CompletedProcess[str]]


def run_cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    binary: str = "testviper",
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``testviper ARGS`` (the installed console script) and capture its output."""
    return subprocess.run(
        [str(BIN / binary), *args],
        cwd=cwd,
        env=env or clean_env(),
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def cli() -> Cli:
    """``run_cli`` as a fixture."""
    return run_cli
