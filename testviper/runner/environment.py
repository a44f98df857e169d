"""Where a run happened: git state, interpreter, host and CI metadata."""

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# Only these CI variables are recorded: an allow-list, so no secret can slip in.
CI_VARIABLES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "GITHUB_WORKFLOW",
    "GITHUB_JOB",
    "GITHUB_REF_NAME",
    "GITHUB_HEAD_REF",
    "GITHUB_SHA",
    "GITHUB_EVENT_NAME",
    "GITHUB_SERVER_URL",
    "GITLAB_CI",
    "CI_PIPELINE_ID",
    "CI_JOB_ID",
    "CI_JOB_URL",
    "CI_COMMIT_REF_NAME",
    "JENKINS_URL",
    "BUILD_NUMBER",
    "BUILD_URL",
    "JOB_NAME",
)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect(root: Path) -> dict[str, Any]:
    """Describe the environment of a run started in ``root``."""
    ci = {name: os.environ[name] for name in CI_VARIABLES if os.environ.get(name)}
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    if branch == "HEAD":  # detached, as in most CI checkouts
        branch = (
            ci.get("GITHUB_HEAD_REF") or ci.get("GITHUB_REF_NAME") or ci.get("CI_COMMIT_REF_NAME")
        )
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "git_branch": branch,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(terse=True),
        "executable": sys.executable,
        "ci": ci or None,
    }
