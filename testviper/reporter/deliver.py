"""Deliver one run to one ReportPortal instance, resumably, without duplicates.

The launch is built from the run's journal (``launch.build_launch``): every launch, item
and log has a UUID derived from the run, the instance and its place in the tree, so the
whole launch is known before the first request and any request can be sent again.

Order: start the launch, start items level by level (every item whose parent exists,
concurrently; a test is started and finished in the same task), send the logs in
multipart batches, finish suites deepest first, finish the launch last. A parent is
never finished before its children, the launch never before its items.

Requests go to the synchronous v1 API over one urllib3 connection pool per instance,
from a pool of worker threads, not through ``reportportal-client``: client 5.7.12 never
sends a launch or log ``uuid``, so a replay would duplicate every log and could not
resume a launch; it reports through v2, where business-rule errors are dropped silently; it
swallows errors instead of reporting them, and sleeps 3 s before finishing a launch.
v1 answers truthfully, and the idempotent UUIDs make concurrency and retries safe.

Retries: connection errors and 408/425/429/5xx are retried with capped exponential
backoff, up to ``instance.retries`` times. A start that got a 5xx or no answer is first
looked up by UUID (it may have been saved): found means done. 400/401/403/404/406 are
never retried; 401/403 stop the instance's delivery as "API key rejected". A deadline
over the whole delivery keeps a hanging server from blocking forever.

Progress (the steps done) is kept in the instance's outbox file, so what is not
delivered now is completed by ``inv sync`` later, from where it stopped.
"""

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from testviper.config import Instance, Settings, warn_insecure
from testviper.reporter import outbox
from testviper.reporter.launch import Item, Launch, Log, attribute, build_launch
from testviper.reporter.masking import Masker, masker_for

WORKERS = 16
LOG_BATCH = 50  # entries per multipart request
LOG_BATCH_BYTES = 4 * 1024 * 1024  # far below RP's 64/128 MB and common proxy limits
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
NEVER_RETRY = frozenset({400, 401, 403, 404, 406})
BACKOFF, BACKOFF_CAP = 0.25, 8.0
SAVE_EVERY = 1.0  # seconds between outbox writes while a level is in progress
FINISH_LAUNCH_NOT_ALLOWED = 40023  # "already finished": a replayed finish is done
BOUNDARY = "testviper-log-batch-7d1f0a2b3c4d"  # JSON-escaped text cannot contain CRLF--


class DeliveryError(Exception):
    """Why a delivery stopped. ``permanent``: retrying as is will not help (key, 4xx)."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent


@dataclass
class DeliveryResult:
    instance: str
    run_id: str
    status: str  # delivered | pending | failed
    launch_uuid: str
    tests: int = 0
    error: str | None = None
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "delivered"


def iso(ts: float) -> str:
    """An epoch float as ISO-8601 with offset and microseconds (RP >= 5.13.2 keeps them)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def default_deadline(instance: Instance) -> float:
    return max(300.0, 4 * instance.timeout * (instance.retries + 1))


def missing_keys(settings: Settings) -> list[tuple[str, str]]:
    """(instance, variable) for every enabled instance whose key variable is not set."""
    return [
        (inst.name, inst.api_key_env)
        for inst in settings.config.reportportal.instances
        if inst.enabled and not settings.secret(inst.api_key_env)
    ]


# --------------------------------------------------------------------------- HTTP


class Api:
    """The v1 reporting API of one instance: one connection pool, timeouts, retries, a deadline.

    urllib3 directly rather than a ``requests.Session``: measured on loopback, a request
    costs 0.16 ms of CPU instead of 0.44 ms, which is most of a large delivery's time.
    No netrc, no environment credentials: the key goes in the Authorization header only.
    HTTP(S)_PROXY/NO_PROXY are honoured.
    """

    def __init__(self, instance: Instance, key: str, deadline: float, masker: Masker) -> None:
        import urllib3

        self.urllib3 = urllib3
        self.instance = instance
        self.masker = masker
        self.base = f"{instance.endpoint}/api/v1/{quote(instance.project, safe='')}"
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self.pool = _pool(instance, WORKERS + 4)
        self.deadline_at = time.monotonic() + deadline
        self.deadline = deadline
        self.stop = threading.Event()

    def close(self) -> None:
        self.pool.clear()

    def _remaining(self) -> float:
        remaining = self.deadline_at - time.monotonic()
        if remaining <= 0:
            raise DeliveryError(
                f"instance {self.instance.name} did not complete within the delivery deadline "
                f"({self.deadline:g} s)"
            )
        return remaining

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str | None,
        root: bool = False,
    ) -> Any:
        timeout = min(self.instance.timeout, self._remaining())
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        return self.pool.request(
            method,
            (self.instance.endpoint if root else self.base) + path,
            body=body,
            headers=headers,
            timeout=self.urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            redirect=False,
        )

    def request(self, method: str, path: str, *, root: bool = False) -> Any:
        """One attempt, no retry: the raw response (``.status``, ``.data``), urllib3 errors
        raised. ``root``: ``path`` is under the server (``/api/info``), not the project."""
        return self._send(method, path, None, None, root)

    def exists(self, path: str) -> bool:
        try:
            return self._send("GET", path, None, None).status == 200
        except (self.urllib3.exceptions.HTTPError, DeliveryError):
            return False

    def call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: Any = None,
        multipart: bytes | None = None,
        exists: str | None = None,
        finished_ok: bool = False,
    ) -> dict[str, Any]:
        """Send one request (JSON ``body`` or a ``multipart`` log batch); return its JSON."""
        errors = self.urllib3.exceptions
        name = self.instance.name
        payload: bytes | None
        content_type: str | None
        if multipart is not None:
            payload, content_type = multipart, f"multipart/form-data; boundary={BOUNDARY}"
        elif body is None:  # a GET or DELETE without a body
            payload, content_type = None, None
        else:
            payload, content_type = json.dumps(body).encode(), "application/json"
        last = ""
        attempts = self.instance.retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = min(BACKOFF * 2 ** (attempt - 1), BACKOFF_CAP)
                if self.stop.wait(min(delay, self._remaining())):
                    raise DeliveryError(f"delivery to {name} stopped")
            uncertain = False
            try:
                resp = self._send(method, path, payload, content_type)
            except errors.NewConnectionError as exc:
                last = f"cannot connect to {self.instance.endpoint} ({self._short(exc)})"
                continue
            except errors.ConnectTimeoutError:
                last = f"cannot connect to {self.instance.endpoint} (timed out)"
                continue
            except errors.ReadTimeoutError:
                last = (
                    f"no answer from {self.instance.endpoint} (timeout {self.instance.timeout:g} s)"
                )
                uncertain = True
            except errors.SSLError as exc:
                raise DeliveryError(
                    f"TLS error talking to {self.instance.endpoint}: {self._short(exc)}", True
                ) from None
            except errors.HTTPError as exc:  # reset, broken pipe, bad answer
                last = f"connection to {self.instance.endpoint} failed ({self._short(exc)})"
                uncertain = True
            else:
                status = resp.status
                data = _json(resp.data)
                if 200 <= status < 300:
                    return data
                message = self._message(data, resp)
                if status in (401, 403):
                    raise DeliveryError(
                        f"API key rejected by instance {name} (HTTP {status}: {message})", True
                    )
                if (
                    finished_ok
                    and status == 406
                    and data.get("errorCode") == FINISH_LAUNCH_NOT_ALLOWED
                ):
                    return {}
                if status in NEVER_RETRY or (status not in RETRY_STATUSES and status < 500):
                    raise DeliveryError(
                        f"instance {name} rejected {what}: HTTP {status}: {message}", True
                    )
                last = f"HTTP {status} from {self.instance.endpoint}: {message}"
                uncertain = True
            if uncertain and exists and self.exists(exists):
                return {}  # the request was processed; only its answer was lost
        raise DeliveryError(f"{last} (gave up after {attempts} attempts at {what})")

    def _short(self, exc: Exception) -> str:
        text = str(exc)
        # urllib3 nests the reason deep inside: "... [Errno 111] Connection refused')".
        found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
        return self.masker(found.group(1).strip() if found else text)[:200]

    def _message(self, data: dict[str, Any], resp: Any) -> str:
        text = str(data.get("message") or "") or resp.data.decode("utf-8", "replace")
        text = " ".join(text.split())[:200] or resp.reason or "no message"
        return self.masker(text)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _pool(instance: Instance, size: int) -> Any:
    """A connection pool for the instance, through the environment's proxy if it has one."""
    import urllib.request
    from urllib.parse import urlsplit

    import urllib3

    tls: dict[str, Any] = {}
    if instance.endpoint.startswith("https"):
        if instance.verify_ssl:
            try:
                import certifi

                tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": certifi.where()}
            except ImportError:
                tls = {"cert_reqs": "CERT_REQUIRED"}
        else:
            tls = {"cert_reqs": "CERT_NONE"}
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    parts = urlsplit(instance.endpoint)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urllib3.ProxyManager(proxy, maxsize=size, **tls)
    return urllib3.PoolManager(maxsize=size, **tls)


# --------------------------------------------------------------------------- delivery


class Delivery:
    """One launch to one instance, skipping the steps the outbox entry says are done."""

    def __init__(
        self,
        api: Api,
        launch: Launch,
        entry: outbox.Entry,
        masker: Masker,
        save: Callable[[], None],
    ) -> None:
        self.api, self.launch, self.entry, self.mask, self.save = api, launch, entry, masker, save
        self.lock = threading.Lock()
        self.error: DeliveryError | None = None
        self.warnings: list[str] = []
        self.saved_at = time.monotonic()

    def done(self, step: str) -> bool:
        with self.lock:
            return step in self.entry.done

    def mark(self, step: str) -> None:
        with self.lock:
            self.entry.done.add(step)

    def run(self) -> None:
        launch = self.launch
        levels = _levels(launch.items)
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="tv-deliver") as pool:
            self.pool = pool
            if not self.done("launch:start"):
                self.start_launch()
                self.mark("launch:start")
                self.save()
            for level in levels:
                self.parallel(
                    self.item_task(item)
                    for item in level
                    if not self.done(f"{item.uuid}:start")
                    or (item.type == "STEP" and not self.done(f"{item.uuid}:finish"))
                )
            self.parallel(
                self.log_task(batch_id, batch)
                for batch_id, batch in _batches(launch.items)
                if not self.done(batch_id)
            )
            for level in reversed(levels):
                self.parallel(
                    self.finish_task(item)
                    for item in level
                    if item.type != "STEP" and not self.done(f"{item.uuid}:finish")
                )
            if not self.done("launch:finish"):
                self.api.call(
                    "PUT",
                    f"/launch/{launch.uuid}/finish",
                    "the launch finish",
                    body={"endTime": iso(launch.end)},
                    finished_ok=True,
                )
                self.mark("launch:finish")

    def parallel(self, tasks: Iterable[Callable[[], None]]) -> None:
        """Run ``tasks`` on the pool; on the first failure stop the rest and raise it."""
        # A bounded window of submitted tasks: 10,000 futures at once cost memory for nothing.
        window: set[Future[None]] = set()
        submitted = False
        for task in tasks:
            if len(window) >= WORKERS * 4:
                _, window = wait(window, return_when=FIRST_COMPLETED)
                self._maybe_save()
            window.add(self.pool.submit(self._guard, task))
            submitted = True
        for _ in as_completed(window):
            self._maybe_save()
        if submitted:
            self.save()
        if self.error is not None:
            raise self.error

    def _maybe_save(self) -> None:
        if time.monotonic() - self.saved_at > SAVE_EVERY:
            self.saved_at = time.monotonic()
            self.save()

    def _guard(self, task: Callable[[], None]) -> None:
        if self.api.stop.is_set():
            return
        try:
            task()
        except DeliveryError as exc:
            with self.lock:
                self.error = self.error or exc
            self.api.stop.set()

    def start_launch(self) -> None:
        launch = self.launch
        body = {
            "name": self.mask(launch.name)[:256] or "TestViper",
            "startTime": iso(launch.start),
            "description": self.mask(launch.description),
            "attributes": self.mask.attributes(launch.attributes)[:256],
            "mode": "DEFAULT",
            "uuid": launch.uuid,
        }
        self.api.call(
            "POST", "/launch", "the launch start", body=body, exists=f"/launch/uuid/{launch.uuid}"
        )

    def item_task(self, item: Item) -> Callable[[], None]:
        def task() -> None:
            if not self.done(f"{item.uuid}:start"):
                self.start_item(item)
                self.mark(f"{item.uuid}:start")
            if item.type == "STEP" and not self.api.stop.is_set():
                self.finish_item(item)
                self.mark(f"{item.uuid}:finish")

        return task

    def finish_task(self, item: Item) -> Callable[[], None]:
        def task() -> None:
            self.finish_item(item)
            self.mark(f"{item.uuid}:finish")

        return task

    def start_item(self, item: Item) -> None:
        body: dict[str, Any] = {
            "name": item.name[:1024],
            "startTime": iso(item.start),
            "type": item.type,
            "launchUuid": self.launch.uuid,
            "uuid": item.uuid,
            "hasStats": True,
        }
        if item.code_ref:
            body["codeRef"] = item.code_ref
        if item.test_case_id:
            body["testCaseId"] = item.test_case_id[:1024]
        if item.parameters:
            body["parameters"] = [
                {"key": p["key"], "value": self.mask(p["value"])} for p in item.parameters
            ]
        if item.attributes:
            body["attributes"] = self.mask.attributes(item.attributes)[:256]
        path = f"/item/{item.parent_uuid}" if item.parent_uuid else "/item"
        self.api.call(
            "POST", path, f"the start of '{item.name}'", body=body, exists=f"/item/uuid/{item.uuid}"
        )

    def finish_item(self, item: Item) -> None:
        body: dict[str, Any] = {"endTime": iso(item.end), "launchUuid": self.launch.uuid}
        if item.status:
            body["status"] = item.status
        if item.issue:
            body["issue"] = item.issue
        self.api.call("PUT", f"/item/{item.uuid}", f"the finish of '{item.name}'", body=body)

    def log_task(self, batch_id: str, batch: list[Log]) -> Callable[[], None]:
        def task() -> None:
            elements = [
                {
                    "uuid": log.uuid,
                    "launchUuid": self.launch.uuid,
                    "itemUuid": log.item_uuid,
                    "time": iso(log.time),
                    "level": log.level,
                    "message": self.mask(log.message),
                }
                for log in batch
            ]
            body = (
                f"--{BOUNDARY}\r\n"
                'Content-Disposition: form-data; name="json_request_part"\r\n'
                "Content-Type: application/json\r\n\r\n"
            ).encode()
            body += json.dumps(elements).encode() + f"\r\n--{BOUNDARY}--\r\n".encode()
            data = self.api.call("POST", "/log", f"{len(batch)} logs", multipart=body)
            rejected = [r for r in data.get("responses") or [] if not r.get("id")]
            if rejected:
                # Per-element rejections are business-rule errors (resending cannot fix
                # them) or, on a replay, logs saved by an earlier attempt.
                with self.lock:
                    self.warnings.append(
                        f"{len(rejected)} of {len(batch)} logs not saved by "
                        f"{self.api.instance.name}: {self.mask(str(rejected[0].get('message')))}"
                    )
            self.mark(batch_id)

        return task


def _levels(items: list[Item]) -> list[list[Item]]:
    """Items grouped by depth (roots first); ``items`` lists parents before children."""
    depth: dict[str, int] = {}
    levels: list[list[Item]] = []
    for item in items:
        d = depth[item.parent_uuid] + 1 if item.parent_uuid else 0
        depth[item.uuid] = d
        while len(levels) <= d:
            levels.append([])
        levels[d].append(item)
    return levels


def _batches(items: list[Item]) -> Iterator[tuple[str, list[Log]]]:
    """Log batches, the same on every attempt, each with a stable id for the outbox."""
    batch: list[Log] = []
    size = 0
    for item in items:
        for log in item.logs:
            length = len(log.message.encode()) + 300
            if batch and (len(batch) >= LOG_BATCH or size + length > LOG_BATCH_BYTES):
                yield f"logs:{batch[0].uuid}", batch
                batch, size = [], 0
            batch.append(log)
            size += length
    if batch:
        yield f"logs:{batch[0].uuid}", batch


# --------------------------------------------------------------------------- entry points


def read_events(journal: Path) -> list[dict[str, Any]]:
    """The journal's events; a torn or corrupt line is skipped (ingest already warned)."""
    events = []
    with journal.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def launch_attributes(
    settings: Settings, instance: Instance, run_id: str, run_dir: Path, history: Any
) -> list[dict[str, Any]]:
    """Configured attributes, coverage (total and per component), git, label and run id."""
    import sqlalchemy as sa

    from testviper.history import schema

    attrs = [attribute(k, v) for k, v in instance.launch.attributes.items()]
    with history.engine.connect() as conn:
        run = conn.execute(sa.select(schema.runs).where(schema.runs.c.id == run_id)).first()
        components = conn.execute(
            sa.select(schema.component_coverage)
            .where(schema.component_coverage.c.run_id == run_id)
            .order_by(schema.component_coverage.c.component)
        ).all()
    if run is not None:
        commit, branch, label = run.git_commit, run.git_branch, run.label
        if run.cov_percent is not None:
            attrs.append(attribute("coverage:total", f"{run.cov_percent:.2f}"))
    else:  # removed from history by retention: the run directory still knows some of it
        meta = _meta(run_dir)
        env = meta.get("environment") or {}
        commit, branch, label = env.get("git_commit"), env.get("git_branch"), meta.get("label")
    for comp in components:
        if comp.percent is not None:
            attrs.append(attribute(f"coverage:{comp.component}", f"{comp.percent:.2f}"))
    if commit:
        attrs.append(attribute("git:commit", commit))
    if branch:
        attrs.append(attribute("git:branch", branch))
    if label:
        attrs.append(attribute("label", label))
    attrs.append({**attribute("run", run_id), "system": True})
    return attrs


def _meta(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def deliver(
    settings: Settings,
    instance: Instance,
    run_id: str,
    run_dir: Path,
    *,
    history: Any = None,
    masker: Masker | None = None,
    deadline: float | None = None,
) -> DeliveryResult:
    """Deliver (or resume delivering) one run to one instance; never raises for RP trouble.

    Whatever is not delivered stays in the outbox with the reason; history's
    ``deliveries`` row mirrors the outcome. An entry another process is delivering right
    now (``inv run`` while ``inv sync`` runs) is left to it.
    """
    with outbox.entry_lock(settings.state_dir, instance.name, run_id) as mine:
        if not mine:
            return DeliveryResult(
                instance.name,
                run_id,
                "busy",
                "",
                error="being delivered by another TestViper process",
            )
        return _deliver(settings, instance, run_id, run_dir, history, masker, deadline)


def _deliver(
    settings: Settings,
    instance: Instance,
    run_id: str,
    run_dir: Path,
    history: Any,
    masker: Masker | None,
    deadline: float | None,
) -> DeliveryResult:
    from testviper.reporter.launch import derived_uuid
    from testviper.runner.run import JOURNAL, connect

    state = settings.state_dir
    history = history if history is not None else connect(settings)
    masker = masker or masker_for(settings)
    path = outbox.entry_path(state, instance.name, run_id)
    try:
        entry = outbox.load_entry(path) if path.exists() else None
    except (OSError, ValueError, TypeError):
        entry = None  # unreadable: start over; the UUID checks make that harmless
    if entry is None:
        entry = outbox.Entry(run_id, instance.name, derived_uuid(run_id, instance.name, "launch"))
    entry.attempts += 1
    entry.status = "pending"
    result = DeliveryResult(instance.name, run_id, "pending", entry.launch_uuid)

    def save() -> None:
        with lock:
            outbox.save_entry(state, entry)

    lock = threading.Lock()
    save()
    _mirror(history, entry, result)
    api = None
    try:
        key = settings.secret(instance.api_key_env)
        if not key:
            raise DeliveryError(
                f"the API key variable {instance.api_key_env} of instance {instance.name} "
                "is not set",
                True,
            )
        try:
            events = read_events(Path(run_dir) / JOURNAL)
        except OSError as exc:
            raise DeliveryError(f"cannot read the run's journal ({exc.strerror})", True) from None
        launch = build_launch(
            run_id,
            instance.name,
            instance.launch.name or settings.project_name,
            events,
            description=instance.launch.description,
            attributes=launch_attributes(settings, instance, run_id, Path(run_dir), history),
        )
        if not launch.items:
            started = next((e.get("time") for e in events if e.get("time")), None)
            launch.start = launch.end = float(started or time.time())
        del events  # the launch holds what is needed; a large journal need not stay in memory
        result.tests = len(launch.leaves)
        api = Api(instance, key, deadline or default_deadline(instance), masker)
        delivery = Delivery(api, launch, entry, masker, save)
        try:
            delivery.run()
        finally:
            result.warnings.extend(delivery.warnings)
    except DeliveryError as exc:
        entry.status = "failed" if exc.permanent else "pending"
        entry.last_error = masker(exc.reason)
        save()
    else:
        entry.status, entry.last_error = "delivered", None
        outbox.remove_entry(state, entry)
    finally:
        if api is not None:
            api.close()
    _mirror(history, entry, result)
    result.status, result.error, result.attempts = entry.status, entry.last_error, entry.attempts
    return result


def _mirror(history: Any, entry: outbox.Entry, result: DeliveryResult) -> None:
    """Record the entry in history; a history problem is a warning, the outbox still has it."""
    from testviper.errors import UserError

    try:
        outbox.record(history, entry)
    except UserError as exc:
        result.warnings.append(f"delivery state not recorded in history: {exc}")


def deliver_all(
    settings: Settings,
    run_id: str,
    run_dir: Path,
    instances: list[Instance] | None = None,
    **kwargs: Any,
) -> list[DeliveryResult]:
    """Deliver a run to every enabled instance (or the ones given), one thread each."""
    from testviper.runner.run import connect

    targets = [i for i in (instances or settings.config.reportportal.instances) if i.enabled]
    if not targets:
        return []
    warn_insecure(targets)
    history = connect(settings)
    masker = masker_for(settings)
    with ThreadPoolExecutor(len(targets), thread_name_prefix="tv-instance") as pool:
        futures = [
            pool.submit(
                deliver, settings, inst, run_id, run_dir, history=history, masker=masker, **kwargs
            )
            for inst in targets
        ]
        return [f.result() for f in futures]


def sync(
    settings: Settings, instance: str | None = None, **kwargs: Any
) -> list[DeliveryResult | str]:
    """Replay the outbox (of one instance), oldest run first; instances concurrently.

    Returns a result per entry tried, or a note (str) for an entry that was skipped.
    """
    from testviper.runner.run import connect

    configured = {inst.name: inst for inst in settings.config.reportportal.instances}
    entries = outbox.pending_entries(settings.state_dir, instance)
    if not entries:
        return []
    history = connect(settings)
    masker = masker_for(settings)
    run_dirs = _run_dirs(settings, history, {e.run_id for _, e in entries})
    per_instance: dict[str, list[outbox.Entry]] = {}
    notes: list[DeliveryResult | str] = []
    for _, entry in entries:
        inst = configured.get(entry.instance)
        if inst is None:
            notes.append(f"{entry.instance}: no longer configured; run {entry.run_id} kept")
        elif not inst.enabled:
            notes.append(f"{entry.instance}: disabled; run {entry.run_id} kept")
        else:
            per_instance.setdefault(entry.instance, []).append(entry)
    warn_insecure(configured[name] for name in per_instance)

    def replay(name: str) -> list[DeliveryResult]:
        out = []
        for entry in per_instance[name]:
            run_dir = run_dirs.get(entry.run_id, settings.state_dir / "runs" / entry.run_id)
            result = deliver(
                settings,
                configured[name],
                entry.run_id,
                run_dir,
                history=history,
                masker=masker,
                **kwargs,
            )
            out.append(result)
            if result.error and result.error.startswith("API key rejected"):
                break  # the same key fails for every entry: stop this instance
        return out

    with ThreadPoolExecutor(max(1, len(per_instance)), thread_name_prefix="tv-sync") as pool:
        for results in pool.map(replay, list(per_instance)):
            notes.extend(results)
    return notes


def _run_dirs(settings: Settings, history: Any, run_ids: set[str]) -> dict[str, Path]:
    import sqlalchemy as sa

    from testviper.history import schema

    with history.engine.connect() as conn:
        rows = conn.execute(
            sa.select(schema.runs.c.id, schema.runs.c.run_dir).where(schema.runs.c.id.in_(run_ids))
        ).all()
    return {row.id: Path(row.run_dir) for row in rows if row.run_dir}
