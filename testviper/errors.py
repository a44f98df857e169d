"""Errors a user can act on.

Library code raises these; the task layer turns them into a one-line message and an
exit code, never a traceback.
"""


class UserError(Exception):
    """Bad usage, configuration or input. The message names the file, field and fix.

    Exit code 2.
    """

    exit_code = 2


class LockHeld(UserError):
    """Another process holds the lock for this task. Exit code 75 (EX_TEMPFAIL)."""

    exit_code = 75


def os_error(exc: OSError) -> UserError:
    """An operating-system failure (disk full, permission denied) as a one-line UserError."""
    where = f"{exc.filename}: " if exc.filename else ""
    return UserError(f"{where}{exc.strerror or exc}")
