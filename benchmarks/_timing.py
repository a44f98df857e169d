"""Helpers shared by the benchmark scripts: locating binaries, timing commands, work dirs."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Not resolved: in a venv sys.executable is a symlink and its directory is the venv's bin.
BIN_DIR = Path(sys.executable).parent


class CommandFailed(RuntimeError):
    """A timed command exited non-zero; the message carries the tail of its output."""


@contextmanager
def work_dir(prefix: str, keep: bool) -> Iterator[Path]:
    """A temporary directory for one benchmark's files, removed afterwards unless ``keep``
    (``--keep``), when its path is printed instead."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        if keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def venv_bin(name: str) -> Path:
    """Path of a console script installed next to the running interpreter."""
    return BIN_DIR / name


def bench_env() -> dict[str, str]:
    """Environment for timed commands.

    PYTHONDONTWRITEBYTECODE is dropped so runs after the warm-up reuse cached bytecode,
    as on a developer machine; otherwise recompiling dominates and hides real overhead.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["AGENT_NO_ANALYTICS"] = "1"
    return env


def time_command(
    cmd: Sequence[str | os.PathLike[str]], cwd: Path, env: dict[str, str] | None = None
) -> float:
    """Run ``cmd`` to completion and return its wall time in seconds.

    Output is captured (not printed) so terminal speed does not skew either side.
    """
    started = time.perf_counter()
    proc = subprocess.run(
        [os.fspath(part) for part in cmd],
        cwd=cwd,
        env=env if env is not None else bench_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise CommandFailed(
            f"{' '.join(map(os.fspath, cmd))} exited {proc.returncode} in {cwd}:\n{tail}"
        )
    return elapsed


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (kept here so callers need not import statistics)."""
    return statistics.median(values)


def interleaved(
    commands: dict[str, Sequence[str | os.PathLike[str]]],
    cwd: Path,
    rounds: int,
    env: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """One warm-up of each command, then ``rounds`` rounds; wall times per label.

    The order flips every round so slow drift (thermal, caches) hits every side alike.
    Raises CommandFailed as ``time_command`` does.
    """
    env = env if env is not None else bench_env()
    times: dict[str, list[float]] = {label: [] for label in commands}
    for label, cmd in commands.items():
        print(f"warm-up {label}: {time_command(cmd, cwd, env):.3f}s", flush=True)
    for round_no in range(rounds):
        order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
        for label in order:
            times[label].append(time_command(commands[label], cwd, env))
            print(f"round {round_no + 1}/{rounds} {label}: {times[label][-1]:.3f}s", flush=True)
    return times
