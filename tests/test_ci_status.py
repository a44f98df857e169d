"""`inv ci-status`: a GitHub REST API stand-in on 127.0.0.1, the real CLI against it."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import clean_env, run_cli, write_files
from local_http import Handler, LocalServer
from test_alerts import free_port

from testviper import config as config_module
from testviper.ops import ci_status

TOKEN = "ghp_TESTtoken0123456789abcdefXYZ"
REPO = "octo-org/octo-repo"
WORKFLOW = "ci.yml"
RUNS_PATH = f"/repos/{REPO}/actions/workflows/{WORKFLOW}/runs"


def gh_run(number: int, status: str, conclusion: str | None, branch: str = "main") -> dict:
    """One workflow run as the API returns it (the fields the module reads, and others)."""
    return {
        "id": 9000 + number,
        "name": "CI",
        "display_title": f"Change number {number}",
        "run_number": number,
        "head_branch": branch,
        "head_sha": f"{number:02d}abcdef0123456789",
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "created_at": f"2026-11-{number:02d}T09:00:00Z",
        "html_url": f"https://github.com/{REPO}/actions/runs/{9000 + number}",
        "run_attempt": 1,
    }


RUNS = [
    gh_run(12, "in_progress", None),
    gh_run(11, "completed", "failure"),
    gh_run(10, "completed", "success", branch="feature"),
]


class FakeGitHub:
    """Answers the list-workflow-runs endpoint for REPO/WORKFLOW; records every request.

    ``delay`` holds each answer back (a slow API); ``status`` forces an error answer
    with ``headers``; a token other than TOKEN gets GitHub's 401.
    """

    def __init__(self) -> None:
        self.runs: list[dict] = list(RUNS)
        self.delay = 0.0
        self.status = 200
        self.headers: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        gh = self

        class Answer(Handler):
            def do_GET(self) -> None:
                gh.requests.append({"path": self.path, "headers": self.headers})  # case-insensitive
                time.sleep(gh.delay)
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.answer(401, {"message": "Bad credentials"})
                elif gh.status != 200:
                    self.answer(gh.status, {"message": "Server says no"}, gh.headers)
                elif path != RUNS_PATH:
                    self.answer(404, {"message": "Not Found"})
                else:
                    runs = [
                        r
                        for r in gh.runs
                        if r["head_branch"] == params.get("branch", r["head_branch"])
                    ]
                    page = runs[: int(params.get("per_page", 30))]
                    self.answer(200, {"total_count": len(runs), "workflow_runs": page})

            def answer(
                self, status: int, body: dict, headers: dict[str, str] | None = None
            ) -> None:
                self.reply(status, json.dumps(body).encode(), headers=headers)

        self.local = LocalServer(Answer)
        self.url = self.local.base

    def close(self) -> None:
        self.local.close()


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    server = FakeGitHub()
    yield server
    server.close()


def github_section(api_url: str, **extra: Any) -> dict[str, Any]:
    return {"repository": REPO, "workflow": WORKFLOW, "api_url": api_url, "timeout": 5, **extra}


def set_github(root: Path, api_url: str, **extra: Any) -> None:
    """Put a `github:` section pointing at ``api_url`` into the project's testviper.yaml."""
    path = root / "testviper.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    data["github"] = github_section(api_url, **extra)
    path.write_text(yaml.safe_dump(data))


@pytest.fixture
def proj(tmp_path: Path, github: FakeGitHub) -> Path:
    write_files(tmp_path, {"testviper.yaml": "project: {name: calc}\n"})
    set_github(tmp_path, github.url)
    return tmp_path


def ci(root: Path, *args: str, token: str | None = TOKEN) -> Any:
    extra = {"GITHUB_TOKEN": token} if token else {}
    done = run_cli("ci-status", *args, cwd=root, env=clean_env(**extra), timeout=60)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    return done


def test_lists_runs_with_conclusions_and_never_the_token(proj: Path, github: FakeGitHub) -> None:
    done = ci(proj)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"GitHub Actions: {REPO} workflow {WORKFLOW}: 3 of 3 runs"
    assert lines[1].split()[:4] == ["#12", "in_progress", "main", "push"]
    assert lines[2].split()[:2] == ["#11", "failure"]
    assert lines[3].split()[:3] == ["#10", "success", "feature"]
    assert "Change number 11" in lines[2]
    assert lines[-1] == (
        f"{WORKFLOW}: latest completed run #11 (main): failure; "
        "last 3 runs: 1 in_progress, 1 failure, 1 success"
    )
    (request,) = github.requests
    assert request["path"] == f"{RUNS_PATH}?per_page=10"
    headers = request["headers"]
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Accept"] == "application/vnd.github+json"
    assert headers["X-GitHub-Api-Version"] == "2022-11-28"


def test_branch_limit_and_json(proj: Path, github: FakeGitHub) -> None:
    done = ci(proj, "--branch", "main", "--limit", "1", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert github.requests[0]["path"] == f"{RUNS_PATH}?per_page=1&branch=main"
    assert (data["repository"], data["workflow"], data["branch"]) == (REPO, WORKFLOW, "main")
    assert data["total_count"] == 2
    assert [(r["number"], r["status"], r["conclusion"]) for r in data["runs"]] == [
        (12, "in_progress", None)
    ]
    assert data["state"] == "OK"
    assert data["summary"] == "ci.yml on main: 1 run, none completed yet (1 in_progress)"


def test_workflow_flag_overrides_the_config(proj: Path, github: FakeGitHub) -> None:
    done = ci(proj, "--workflow", "nightly.yml")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"testviper: error: github: workflow 'nightly.yml' of {REPO} not found (HTTP 404), "
        "or the token in GITHUB_TOKEN cannot see it; check github.repository and github.workflow"
    )
    assert github.requests[0]["path"].startswith(f"/repos/{REPO}/actions/workflows/nightly.yml/")


def test_missing_token_is_a_one_line_error(proj: Path, github: FakeGitHub) -> None:
    done = ci(proj, token=None)
    assert done.returncode == 2
    assert done.stderr.startswith("testviper: error: github: environment variable GITHUB_TOKEN")
    assert len(done.stderr.splitlines()) == 1
    assert github.requests == []  # nothing sent without a token


def test_token_from_dotenv_and_custom_variable(proj: Path, github: FakeGitHub) -> None:
    set_github(proj, github.url, token_env="CI_READ_TOKEN")
    (proj / ".env").write_text(f"CI_READ_TOKEN={TOKEN}\n")
    done = ci(proj, token=None)
    assert done.returncode == 0, done.stderr
    assert github.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_rejected_token_exit_2(proj: Path) -> None:
    done = ci(proj, token="ghp_wrongtoken000000")
    assert done.returncode == 2
    assert "the token in GITHUB_TOKEN was rejected (HTTP 401: Bad credentials)" in done.stderr
    assert "ghp_wrongtoken000000" not in done.stdout + done.stderr


def test_server_error_and_rate_limit_exit_1(proj: Path, github: FakeGitHub) -> None:
    github.status = 502
    done = ci(proj)
    assert done.returncode == 1
    assert done.stderr.strip() == "testviper: error: GitHub answered HTTP 502: Server says no"
    github.status = 403
    github.headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1795000000"}
    done = ci(proj)
    assert done.returncode == 1
    assert "rate limit reached (HTTP 403); it resets at " in done.stderr


def test_unreachable_api_exit_1(proj: Path) -> None:
    set_github(proj, f"http://127.0.0.1:{free_port()}")
    done = ci(proj)
    assert done.returncode == 1
    assert done.stderr.startswith("testviper: error: cannot reach http://127.0.0.1:")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"api_url": "http://api.example.org"},
            "github.api_url: http:// is only allowed for loopback; use https://",
        ),
        ({"repository": "just-a-name"}, "github.repository: 'just-a-name' is not owner/name"),
        ({"token_env": "ghp_abc-123"}, "github.token_env: must name an environment variable"),
        ({"workflow": None}, "github.workflow: not set"),
    ],
)
def test_bad_config_exit_2(proj: Path, section: dict[str, Any], message: str) -> None:
    data = yaml.safe_load((proj / "testviper.yaml").read_text())
    data["github"].update(section)
    (proj / "testviper.yaml").write_text(yaml.safe_dump(data))
    done = ci(proj)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_limit_out_of_range(proj: Path) -> None:
    done = ci(proj, "--limit", "101")
    assert done.returncode == 2
    assert "--limit: 101 is not between 1 and 100" in done.stderr


@pytest.mark.parametrize(
    ("runs", "state", "summary"),
    [
        ([], "WARNING", "ci.yml: no runs found"),
        (
            [gh_run(3, "completed", "success"), gh_run(2, "completed", "failure")],
            "OK",
            "ci.yml: latest completed run #3 (main): success; last 2 runs: 1 success, 1 failure",
        ),
        (
            [gh_run(5, "completed", "timed_out"), gh_run(4, "completed", "cancelled")],
            "WARNING",
            "ci.yml: latest completed run #5 (main): timed_out; "
            "last 2 runs: 1 timed_out, 1 cancelled",
        ),
    ],
)
def test_judge(runs: list[dict], state: str, summary: str) -> None:
    listing = ci_status.Listing(REPO, WORKFLOW, None, [ci_status._run(r) for r in runs])
    assert ci_status.judge(listing) == (state, summary)


def test_configured_needs_workflow_and_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    write_files(tmp_path, {"testviper.yaml": "github: {workflow: ci.yml}\n"})
    settings = config_module.load(tmp_path / "testviper.yaml", check_paths=False)
    assert not ci_status.configured(settings)
    monkeypatch.setenv("GITHUB_REPOSITORY", REPO)  # what GitHub Actions sets
    assert ci_status.configured(settings)
