"""GitHub Actions: the recent runs of one workflow and their conclusions, via the REST API.

One request: ``GET {api_url}/repos/{owner}/{repo}/actions/workflows/{workflow}/runs``
with ``per_page`` (and ``branch``), authenticated with the token from the environment
variable ``github.token_env`` (or ``.env``). The token is only ever sent in the
``Authorization`` header: never printed, logged or put in an error message (answers are
masked all the same). http:// is accepted only for a loopback ``api_url`` (the config
enforces it).

Errors the user must fix (no token, token rejected, repository or workflow not found)
are ``UserError`` (exit 2); a GitHub that cannot be reached, answers 5xx or limits the
rate is ``CIStatusError``: try again later.
"""

import json
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from testviper.config import Settings
from testviper.errors import UserError
from testviper.reporter.masking import Masker

API_VERSION = "2022-11-28"
# Conclusions that mean the workflow did not pass; cancelled, skipped, neutral do not count.
FAILED = frozenset({"failure", "timed_out", "startup_failure"})


class CIStatusError(Exception):
    """GitHub could not answer now (network, 5xx, rate limit): retrying later may help."""


@dataclass
class WorkflowRun:
    id: int
    number: int | None
    title: str
    branch: str | None
    commit: str | None
    event: str | None
    status: str  # queued | in_progress | completed | waiting | ...
    conclusion: str | None  # success | failure | cancelled | ...; None until completed
    created_at: str | None
    url: str | None

    @property
    def result(self) -> str:
        """The conclusion of a completed run, else its status."""
        return self.conclusion or self.status


@dataclass
class Listing:
    repository: str
    workflow: str
    branch: str | None
    runs: list[WorkflowRun] = field(default_factory=list)
    total_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        state, summary = judge(self)
        return {
            "repository": self.repository,
            "workflow": self.workflow,
            "branch": self.branch,
            "total_count": self.total_count,
            "state": state,
            "summary": summary,
            "runs": [asdict(r) for r in self.runs],
        }


def configured(settings: Settings) -> bool:
    """Whether the daily ci step has a workflow to look at."""
    gh = settings.config.github
    return bool(gh.workflow and (gh.repository or os.environ.get("GITHUB_REPOSITORY")))


def _repository(settings: Settings) -> str:
    repo = settings.config.github.repository or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise UserError(
            "github.repository: not set; add `github: {repository: owner/name}` to the config "
            "(GITHUB_REPOSITORY is used when set)"
        )
    return repo


def _token(settings: Settings) -> str:
    name = settings.config.github.token_env
    token = settings.secret(name)
    if not token:
        raise UserError(
            f"github: environment variable {name} is not set; export a token that can read "
            "the repository's Actions (or put it in .env), or set github.token_env"
        )
    return token


def runs_url(api_url: str, repository: str, workflow: str, branch: str | None, limit: int) -> str:
    owner, name = repository.split("/", 1)
    query: dict[str, Any] = {"per_page": limit}
    if branch:
        query["branch"] = branch
    return (
        f"{api_url}/repos/{quote(owner, safe='')}/{quote(name, safe='')}/actions/workflows/"
        f"{quote(workflow, safe='')}/runs?{urlencode(query)}"
    )


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def _reset_time(headers: Any) -> str:
    try:
        moment = datetime.fromtimestamp(int(headers.get("X-RateLimit-Reset")), UTC)
    except (TypeError, ValueError):
        return ""
    return f"; it resets at {moment:%H:%M} UTC"


def _http_error(exc: urllib.error.HTTPError, where: str, env: str) -> Exception:
    status = exc.code
    text = " ".join(_message(exc.read()).split())[:200]
    said = f": {text}" if text else ""
    if status == 401:
        return UserError(
            f"github: the token in {env} was rejected (HTTP 401{said}); put a valid token in {env}"
        )
    limited = exc.headers.get("X-RateLimit-Remaining") == "0"
    if status == 429 or (status == 403 and limited):
        return CIStatusError(
            f"GitHub API rate limit reached (HTTP {status}){_reset_time(exc.headers)}"
        )
    if status == 403:
        return UserError(
            f"github: access to {where} refused (HTTP 403{said}); the token in {env} needs "
            "read access to the repository's Actions"
        )
    if status == 404:
        return UserError(
            f"github: {where} not found (HTTP 404), or the token in {env} cannot see it; "
            "check github.repository and github.workflow"
        )
    if status >= 500:
        return CIStatusError(f"GitHub answered HTTP {status}{said}")
    return UserError(f"github: HTTP {status} for {where}{said}")


def _run(data: dict[str, Any]) -> WorkflowRun:
    return WorkflowRun(
        id=int(data.get("id") or 0),
        number=data.get("run_number"),
        title=str(data.get("display_title") or data.get("name") or ""),
        branch=data.get("head_branch"),
        commit=data.get("head_sha"),
        event=data.get("event"),
        status=str(data.get("status") or "unknown"),
        conclusion=data.get("conclusion"),
        created_at=data.get("created_at"),
        url=data.get("html_url"),
    )


def fetch_runs(
    settings: Settings,
    workflow: str | None = None,
    branch: str | None = None,
    limit: int | None = None,
) -> Listing:
    """The newest ``limit`` runs of the workflow (of ``branch``), newest first."""
    gh = settings.config.github
    workflow = workflow or gh.workflow
    if not workflow:
        raise UserError(
            "github.workflow: not set; add `github: {workflow: ci.yml}` to the config "
            "or pass --workflow"
        )
    limit = limit or gh.limit
    if not 1 <= limit <= 100:
        raise UserError(f"--limit: {limit} is not between 1 and 100 (one page of the API)")
    branch = branch or gh.branch
    repository = _repository(settings)
    token = _token(settings)
    mask = Masker([token])
    where = f"workflow '{workflow}' of {repository}"
    request = urllib.request.Request(
        runs_url(gh.api_url, repository, workflow, branch, limit),
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "testviper",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=gh.timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        error = _http_error(exc, where, gh.token_env)
        raise type(error)(mask(str(error))) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
        reason = getattr(exc, "reason", exc)
        raise CIStatusError(mask(f"cannot reach {gh.api_url}: {reason}")) from None
    try:
        data = json.loads(body)
        runs = [_run(item) for item in data["workflow_runs"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CIStatusError(f"{gh.api_url} did not answer with a list of workflow runs") from None
    return Listing(repository, workflow, branch, runs, int(data.get("total_count") or len(runs)))


def judge(listing: Listing) -> tuple[str, str]:
    """A health state (OK/WARNING) and one line: the newest completed run decides."""
    runs = listing.runs
    scope = f"{listing.workflow}" + (f" on {listing.branch}" if listing.branch else "")
    if not runs:
        return "WARNING", f"{scope}: no runs found"
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.result] = counts.get(run.result, 0) + 1
    tally = ", ".join(f"{n} {word}" for word, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    recent = f"{len(runs)} run{'' if len(runs) == 1 else 's'}"
    done = next((r for r in runs if r.status == "completed"), None)
    if done is None:
        return "OK", f"{scope}: {recent}, none completed yet ({tally})"
    latest = f"latest completed run #{done.number} ({done.branch or '?'}): {done.result}"
    text = f"{scope}: {latest}; last {recent}: {tally}"
    return ("WARNING" if done.conclusion in FAILED else "OK"), text


def render(listing: Listing) -> str:
    """One line per run, newest first, then the verdict line."""
    scope = f"{listing.repository} workflow {listing.workflow}"
    scope += f", branch {listing.branch}" if listing.branch else ""
    lines = [f"GitHub Actions: {scope}: {len(listing.runs)} of {listing.total_count} runs"]
    for r in listing.runs:
        created = (r.created_at or "").replace("T", " ").removesuffix("Z")[:16]
        title = " ".join(r.title.split())
        title = title if len(title) <= 60 else title[:59] + "…"
        lines.append(
            f"  #{r.number or '?':<6} {r.result:<16} {(r.branch or '-'):<20} "
            f"{(r.event or '-'):<18} {created:<16}  {(r.commit or '')[:7]}  {title}"
        )
    lines.append(judge(listing)[1])
    return "\n".join(lines)
