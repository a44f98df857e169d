"""What every task shares: loading settings and turning UserError into an exit code."""

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from invoke import Task
from invoke.exceptions import Exit

P = ParamSpec("P")
R = TypeVar("R")

CONFIG_HELP = (
    "config file (default: $TESTVIPER_CONFIG, then ./testviper.yaml, then built-in defaults)"
)


class ShortFlagTask(Task):  # type: ignore[type-arg]
    """Invoke's task, but a short flag is never ``-``.

    Invoke gives an option the first letter of its name not taken yet: for ``--no-live``
    after ``-n`` and ``-o`` that is the dash, which would make ``--`` mean ``--no-live``.
    """

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        return super().arg_opts(name, default, taken_names | {"-"})


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print a UserError as one line on stderr and exit with its code; no traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from testviper.errors import UserError, os_error

        try:
            return func(*args, **kwargs)
        except UserError as exc:
            raise Exit(f"testviper: error: {exc}", code=exc.exit_code) from None
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as other CLI tools do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=1) from None
        except OSError as exc:  # disk full, permission denied: the environment, not a bug
            raise Exit(f"testviper: error: {os_error(exc)}", code=2) from None

    return wrapper


def settings(config: str | None, check_paths: bool = True) -> Any:
    """Load and validate the configuration (imported here to keep `inv --list` fast)."""
    from testviper import config as config_module

    return config_module.load(config, check_paths=check_paths)
