"""A pytest process started before the run's configuration is read.

``inv run`` spends its first tenth of a second validating the configuration and preparing
the run directory, and pytest spends about as long loading itself before it collects a
test. The runner therefore starts this module first (``python -m
testviper.runner.starter FD``): it loads pytest, its built-in plugins and coverage.py
while the runner works, then reads the run's request (arguments, working directory,
environment) from the pipe ``FD`` and becomes ``python -m pytest ARGS``, run from that
directory. When the runner gives up first (a configuration error, Ctrl-C), the pipe
closes unwritten (or the runner stops the process) and nothing runs. The ``testviper``
console script starts it earlier still, before it imports Invoke (``early``).

The process is started with the runner's environment minus the variables that may hold
ReportPortal keys, guessed from the raw configuration file (``removed``); the request
then sets the exact environment of the run. If the validated configuration names a key
variable the guess missed, or the guess removed one it does not name, the runner
stops this process and starts pytest the ordinary way: the tests' process never holds a
key, and its environment at start is the one the ordinary way gives it.

The child side imports only the standard library before pytest: it runs in the user's
test process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Starter:
    """The waiting process and the pipe its request goes to."""

    proc: subprocess.Popen[bytes]
    pipe: int
    removed: frozenset[str]
    launched: bool = False

    def usable(self, secrets: Iterable[str]) -> bool:
        """True when the process started with exactly the ordinary run's environment."""
        return self.removed == {name for name in secrets if name in os.environ}

    def launch(
        self, args: Sequence[str], cwd: Path, env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        """Send the request: the waiting process becomes ``python -m pytest ARGS``.

        Raises OSError when the process is gone; ``cancel`` then reaps it.
        """
        request = json.dumps({"args": list(args), "cwd": str(cwd), "env": dict(env)})
        fd, self.pipe = self.pipe, -1
        with open(fd, "wb") as pipe:  # closing it ends the request
            pipe.write(request.encode())
        self.launched = True
        return self.proc

    def cancel(self) -> None:
        """Stop the process unless it runs the tests; it has only been loading modules."""
        if self.launched:
            return
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1
        self.proc.kill()
        self.proc.wait()


def guessed_secrets(raw: Any, default: str) -> set[str]:
    """Every string in the raw config that names a set environment variable, and ``default``."""
    from testviper.config_file import ENV_NAME

    found = {default}
    stack = [raw]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and ENV_NAME.match(value):
            found.add(value)
    return {name for name in found if name in os.environ}


# Started by the console script before it loads Invoke (``early``), for ``prestart``.
_early: Starter | None = None


def early(argv: Sequence[str]) -> None:
    """Start the waiting process for ``testviper ARGV`` if it is a plain ``run``.

    The console script calls this before it imports Invoke, which gains a run the
    0.07 s that import takes (``inv run`` cannot: ``inv`` is Invoke). Only ``run`` as
    the first argument, without ``-c``/``--config`` or help, qualifies; otherwise the
    task starts its process itself. One left unclaimed (an unknown option) is stopped
    at exit.
    """
    global _early
    head = argv[: argv.index("--")] if "--" in argv else argv
    if head[:1] == ["run"] and not any(
        a.startswith(("-c", "--config", "-h", "--help")) for a in head
    ):
        _early = prestart(None)
        if _early is not None:
            atexit.register(_early.cancel)


def prestart(explicit: str | None) -> Starter | None:
    """Start the waiting pytest process for the config ``explicit`` (as ``--config``).

    The one ``early`` started is used when it was for the same config. None when the
    file cannot be read (validation reports that next) or the process cannot be
    started (the ordinary way then says why).
    """
    global _early
    if _early is not None:
        started, _early = _early, None
        if explicit is None:
            return started
        started.cancel()
    from testviper.config_file import DEFAULT_KEY_ENV, find_config, read_yaml
    from testviper.errors import UserError

    try:
        path = find_config(explicit)
        raw = read_yaml(path) if path else {}
    except UserError:
        return None
    removed = frozenset(guessed_secrets(raw, DEFAULT_KEY_ENV))
    env = {k: v for k, v in os.environ.items() if k not in removed}
    read, write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(read)], pass_fds=(read,), env=env
        )
    except (OSError, ValueError):  # ValueError: no pass_fds on this platform
        os.close(write)
        return None
    finally:
        os.close(read)
    return Starter(proc, write, removed)


def _warm() -> None:
    """Load what ``python -m pytest`` loads first; a failure here is left to pytest."""
    import importlib

    import pytest  # noqa: F401
    from _pytest.config import default_plugins

    for name in default_plugins:
        importlib.import_module(f"_pytest.{name}")
    import coverage  # noqa: F401


def main(fd: int) -> None:
    try:
        with contextlib.suppress(Exception):
            _warm()
        with open(fd, "rb") as pipe:
            data = pipe.read()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if not data:
        raise SystemExit(0)  # the runner stopped before the tests: nothing to run
    request = json.loads(data)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # as for `python -m pytest` started there
    sys.argv[1:] = request["args"]
    import runpy

    runpy.run_module("pytest", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
