"""Ask ReportPortal instances questions: are they usable, what launches do they hold.

Everything goes through ``api.Api`` (keep-alive connections per instance, the key in the
Authorization header only, timeouts bounded by a deadline): there is one HTTP layer.

``check_instance`` answers "can a delivery to this instance work?": ``GET /api/info``
(unauthenticated, so it proves only that the server answers, and gives its version), then
``GET /api/v1/{project}/settings`` with the key, which proves the key and the project.
"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from testviper.config import Instance, Settings
from testviper.errors import UserError
from testviper.reporter.api import Api, DeliveryError, TransportError, _json
from testviper.reporter.masking import Masker, masker_for

PAGE_SIZE = 100  # launches per listing request
DELETE_BATCH = 50  # launch ids per DELETE request
AGE = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$", re.IGNORECASE)
AGE_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


@dataclass
class InstanceCheck:
    name: str
    endpoint: str
    reachable: bool
    key_accepted: bool | None  # None when not reachable / no key
    project_exists: bool | None
    latency_ms: float | None  # round trip of the authenticated call
    version: str | None  # from GET /api/info
    error: str | None  # one line, never contains the key

    @property
    def ok(self) -> bool:
        return self.reachable and self.key_accepted is True and self.project_exists is True

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "ok": self.ok,
            "reachable": self.reachable,
            "key_accepted": self.key_accepted,
            "project_exists": self.project_exists,
            "latency_ms": self.latency_ms,
            "version": self.version,
            "error": self.error,
        }


def instances_named(settings: Settings, names: list[str] | None) -> list[Instance]:
    """The instances called ``names`` (in that order), or every enabled one for None."""
    configured = {inst.name: inst for inst in settings.config.reportportal.instances}
    if names is None:
        return [inst for inst in configured.values() if inst.enabled]
    unknown = [n for n in names if n not in configured]
    if unknown:
        raise UserError(
            f"--instance {unknown[0]}: no such ReportPortal instance "
            f"(configured: {', '.join(configured) or 'none'})"
        )
    return [configured[n] for n in dict.fromkeys(names)]


def _unanswered(exc: TransportError, endpoint: str, limit: float, failed: str) -> str:
    """Why a check request got no answer: the timeout, or ``failed`` (a template for the
    endpoint) and the cause."""
    if exc.timeout and exc.sent:
        return f"no answer from {endpoint} within {limit:g} s"
    return f"{failed.format(endpoint)}: {exc.detail}"


def check_instance(
    settings: Settings, instance: Instance, timeout: float | None = None
) -> InstanceCheck:
    """Reachable, key accepted, project exists, latency and version of one instance.

    Never raises for RP trouble, and finishes within ``timeout`` (default: the instance's)
    plus scheduling slack, however the server behaves.
    """
    masker = masker_for(settings)
    key = settings.secret(instance.api_key_env) or ""
    limit = timeout if timeout is not None else instance.timeout
    check = InstanceCheck(instance.name, instance.endpoint, False, None, None, None, None, None)
    api = Api(instance.model_copy(update={"timeout": limit}), key, limit, masker)
    if not key:
        api.headers.pop("Authorization", None)
    try:
        try:
            info = api.request("GET", "/api/info", root=True)
        except TransportError as exc:
            check.error = _unanswered(exc, instance.endpoint, limit, "cannot reach {}")
            return check
        except DeliveryError as exc:  # the deadline
            check.error = exc.reason
            return check
        check.reachable = True
        build = _json(info.data).get("build")
        if isinstance(build, dict) and build.get("version"):
            check.version = str(build["version"])[:50]
        if not 200 <= info.status < 300:
            hint = "" if info.status >= 500 else " (is the endpoint the ReportPortal root URL?)"
            check.error = f"{instance.endpoint} answered HTTP {info.status} to /api/info{hint}"
            return check
        if not key:
            check.error = f"the API key variable {instance.api_key_env} is not set"
            return check
        started = time.perf_counter()
        try:
            resp = api.request("GET", "/settings")
        except TransportError as exc:
            check.error = _unanswered(exc, instance.endpoint, limit, "connection to {} failed")
            return check
        except DeliveryError as exc:
            check.error = exc.reason
            return check
        check.latency_ms = round((time.perf_counter() - started) * 1000, 1)
        _judge(check, instance, resp, masker)
        return check
    finally:
        api.close()


def _judge(check: InstanceCheck, instance: Instance, resp: Any, masker: Masker) -> None:
    status = resp.status
    if status in (401, 403):
        check.key_accepted = False
        check.error = f"API key rejected by instance {instance.name} (HTTP {status})"
    elif status == 404:
        check.key_accepted, check.project_exists = True, False
        check.error = f"project '{instance.project}' not found on {instance.endpoint}"
    elif 200 <= status < 300:
        check.key_accepted = check.project_exists = True
    else:
        message = str(_json(resp.data).get("message") or resp.reason or "")
        message = masker(" ".join(message.split()))[:200]
        check.error = f"HTTP {status} from {instance.endpoint}: {message}".rstrip(": ")


def check_all(settings: Settings, names: list[str] | None = None) -> list[InstanceCheck]:
    """``check_instance`` for the named (default: every enabled) instances, concurrently."""
    targets = instances_named(settings, names)
    if not targets:
        return []
    with ThreadPoolExecutor(len(targets), thread_name_prefix="tv-check") as pool:
        return list(pool.map(lambda inst: check_instance(settings, inst), targets))


# --------------------------------------------------------------------------- launches


@dataclass
class LaunchInfo:
    id: int
    uuid: str
    name: str
    number: int | None
    status: str
    start: datetime | None
    statistics: dict[str, int]  # executions: total, passed, failed, skipped

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "name": self.name,
            "number": self.number,
            "status": self.status,
            "start": self.start.isoformat() if self.start else None,
            "statistics": self.statistics,
        }


def parse_time(value: Any) -> datetime | None:
    """RP's timestamps: epoch milliseconds (number or string) or ISO-8601."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            return datetime.fromtimestamp(int(value) / 1000, UTC)
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _launch_info(data: dict[str, Any]) -> LaunchInfo:
    executions = (data.get("statistics") or {}).get("executions") or {}
    stats = {k: int(v) for k, v in executions.items() if isinstance(v, int)}
    return LaunchInfo(
        id=int(data.get("id") or 0),
        uuid=str(data.get("uuid") or ""),
        name=str(data.get("name") or ""),
        number=data.get("number") if isinstance(data.get("number"), int) else None,
        status=str(data.get("status") or "?"),
        start=parse_time(data.get("startTime")),
        statistics=stats,
    )


def _api(settings: Settings, instance: Instance) -> Api:
    key = settings.secret(instance.api_key_env)
    if not key:
        raise UserError(
            f"reportportal instance '{instance.name}': its API key variable "
            f"{instance.api_key_env} is not set"
        )
    deadline = 4 * instance.timeout * (instance.retries + 1)
    return Api(instance, key, deadline, masker_for(settings))


def _pages(api: Api, limit: int | None, filters: dict[str, str]) -> list[LaunchInfo]:
    out: list[LaunchInfo] = []
    page = 1
    while limit is None or len(out) < limit:
        size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(out))
        query = {"page.page": page, "page.size": size, "page.sort": "startTime,desc", **filters}
        data = api.call("GET", f"/launch?{urlencode(query)}", "the launch list")
        content = data.get("content") or []
        out.extend(_launch_info(x) for x in content if isinstance(x, dict))
        total_pages = (data.get("page") or {}).get("totalPages")
        if not content or (isinstance(total_pages, int) and page >= total_pages):
            break
        page += 1
    return out if limit is None else out[:limit]


def recent_launches(settings: Settings, instance: Instance, limit: int = 20) -> list[LaunchInfo]:
    """The instance's newest launches, newest first (raises DeliveryError for RP trouble)."""
    if limit < 1:
        raise UserError(f"--limit {limit}: give a positive number")
    api = _api(settings, instance)
    try:
        return _pages(api, limit, {})
    finally:
        api.close()


def parse_age(text: str) -> timedelta:
    """``90d``, ``12w``, ``6m`` (30-day months), ``1y`` as a timedelta."""
    found = AGE.match(text or "")
    if not found or int(found.group(1)) == 0:
        raise UserError(
            f"--older-than {text!r}: give a positive age in days, weeks, months or years, "
            "like 90d, 12w, 6m or 1y"
        )
    return timedelta(days=int(found.group(1)) * AGE_DAYS[found.group(2).lower()])


def old_launches(
    settings: Settings, instance: Instance, age: timedelta, now: datetime | None = None
) -> tuple[list[LaunchInfo], int]:
    """Finished launches started before now - ``age``; and how many old ones are in progress."""
    cutoff = (now or datetime.now(UTC)) - age
    api = _api(settings, instance)
    try:
        found = _pages(api, None, {"filter.lt.startTime": str(int(cutoff.timestamp() * 1000))})
    finally:
        api.close()
    old = [x for x in found if x.start is not None and x.start < cutoff]
    done = [x for x in old if x.status != "IN_PROGRESS"]
    return done, len(old) - len(done)


@dataclass
class DeleteOutcome:
    removed: list[int]
    not_found: list[int]
    errors: list[str]


def delete_launches(settings: Settings, instance: Instance, ids: list[int]) -> DeleteOutcome:
    """``DELETE /api/v1/{project}/launch`` with ``{"ids": [...]}``, in batches."""
    outcome = DeleteOutcome([], [], [])
    api = _api(settings, instance)
    try:
        for start in range(0, len(ids), DELETE_BATCH):
            batch = ids[start : start + DELETE_BATCH]
            data = api.call(
                "DELETE", "/launch", f"deleting {len(batch)} launches", body={"ids": batch}
            )
            outcome.removed += [
                i for i in data.get("successfullyRemoved") or [] if isinstance(i, int)
            ]
            outcome.not_found += [i for i in data.get("notFound") or [] if isinstance(i, int)]
            outcome.errors += [
                api.masker(str(e.get("message") if isinstance(e, dict) else e))
                for e in data.get("errors") or []
            ]
    finally:
        api.close()
    return outcome
