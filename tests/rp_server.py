"""A ReportPortal test server: real HTTP on 127.0.0.1, validation like RP 5.15, fault injection.

Standard library only. Speaks the parts of the RP API that ``reportportal-client`` and the
``pytest-reportportal`` agent use (v1 synchronous and v2 asynchronous reporting, reads, launch
update/list/delete, the items of a launch, project settings, info/health/users) and validates
requests the way the real server does (see the shared ReportPortal reference, sections 1.4-1.7).

    with RPServer(api_keys={"good-key"}, projects={"proj"}) as rp:
        client = RPClient(rp.url, "proj", api_key="good-key")
        ...
        assert rp.violations == []

v1 requests get the real server's error responses. v2 requests only get auth and request-body
("bean") errors synchronously; business-rule errors are recorded in ``rp.violations`` and the
message is dropped, as the real consumer parks them. v2 messages referring to a launch/item that
does not exist yet are kept and re-applied as soon as it is created (the real consumer retries
them); whatever is still waiting shows up in ``rp.violations``.
"""

from __future__ import annotations

import contextlib
import copy
import email.utils
import json
import re
import socket
import ssl
import threading
import time
import uuid as uuidlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

__all__ = ["Item", "Launch", "LogEntry", "RPServer", "RequestRecord", "parse_time"]

VERSION = "5.15.1"

ITEM_TYPES = frozenset(
    {"SUITE", "STORY", "TEST", "SCENARIO", "STEP", "BEFORE_CLASS", "BEFORE_GROUPS"}
    | {"BEFORE_METHOD", "BEFORE_SUITE", "BEFORE_TEST", "AFTER_CLASS", "AFTER_GROUPS"}
    | {"AFTER_METHOD", "AFTER_SUITE", "AFTER_TEST"}
)
STATUSES = frozenset({"PASSED", "FAILED", "STOPPED", "SKIPPED", "INTERRUPTED", "CANCELLED"})
STATUSES |= {"INFO", "WARN"}
GOOD_STATUSES = frozenset({"PASSED", "INFO", "WARN"})
MODES = frozenset({"DEFAULT", "DEBUG"})

DEFECT_GROUPS = {
    "TO_INVESTIGATE": ("to_investigate", "ti001", "TI", "To Investigate", "#ffb743"),
    "PRODUCT_BUG": ("product_bug", "pb001", "PB", "Product Bug", "#ec3900"),
    "AUTOMATION_BUG": ("automation_bug", "ab001", "AB", "Automation Bug", "#f7d63e"),
    "SYSTEM_ISSUE": ("system_issue", "si001", "SI", "System Issue", "#0274d1"),
    "NO_DEFECT": ("no_defect", "nd001", "ND", "No Defect", "#777777"),
}
LOCATOR_PREFIX = {"ti": "to_investigate", "pb": "product_bug", "ab": "automation_bug"}
LOCATOR_PREFIX |= {"si": "system_issue", "nd": "no_defect"}

# errorCode values (commons ErrorType) used here
INCORRECT_REQUEST = 4001
ACCESS_DENIED = 4003
PROJECT_NOT_FOUND = 4040
LAUNCH_NOT_FOUND = 4041
TEST_ITEM_NOT_FOUND = 4043
ISSUE_TYPE_NOT_FOUND = 4044
BAD_RETRY = 40016
FINISH_TIME_EARLIER = 40021
FINISH_LAUNCH_NOT_ALLOWED = 40023
CHILD_START_EARLIER = 40025
UNCLASSIFIED = 5000
NOT_FOUND_CODES = frozenset({LAUNCH_NOT_FOUND, TEST_ITEM_NOT_FOUND})

ENDPOINTS = (
    "start_launch",
    "finish_launch",
    "start_item",
    "finish_item",
    "log_entry",
    "log_batch",
    "get_launch",
    "get_item",
    "update_launch",
    "update_item",
    "list_launches",
    "list_items",
    "delete_launches",
    "delete_launch",
    "settings",
    "info",
    "health",
    "users",
    "list_api_keys",
    "create_api_key",
    "delete_api_key",
    "unknown",
)


class RPError(Exception):
    """A rejection with the real server's HTTP status and errorCode."""

    def __init__(self, status: int, code: int, message: str, missing: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.missing = status, code, message, missing


def _bad(message: str) -> RPError:
    return RPError(400, INCORRECT_REQUEST, f"Incorrect Request. {message}")


# --------------------------------------------------------------------------- time


def parse_time(value: Any) -> datetime:
    """Parse any timestamp format RP 5.15 accepts (§1.5) into an aware UTC datetime."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if re.fullmatch(r"-?\d+", text):
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"unparseable timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


# --------------------------------------------------------------------------- model


@dataclass
class Launch:
    uuid: str
    id: int
    number: int
    name: str
    start_time: datetime
    project: str
    api: str
    description: str | None = None
    mode: str = "DEFAULT"
    attributes: list[dict] = field(default_factory=list)
    status: str = "IN_PROGRESS"
    requested_status: str | None = None
    end_time: datetime | None = None
    rerun: bool = False
    owner: str = "default"
    roots: list[str] = field(default_factory=list)  # item uuids

    @property
    def finished(self) -> bool:
        return self.status != "IN_PROGRESS"


@dataclass
class Item:
    uuid: str
    id: int
    launch_uuid: str
    parent_uuid: str | None
    name: str
    type: str
    start_time: datetime
    api: str
    description: str | None = None
    code_ref: str | None = None
    test_case_id: str | None = None
    unique_id: str | None = None
    parameters: list[dict] | None = None
    attributes: list[dict] = field(default_factory=list)
    has_stats: bool = True
    retry: bool = False
    retry_of: str | None = None
    status: str = "IN_PROGRESS"
    issue: dict | None = None
    end_time: datetime | None = None
    finish_count: int = 0
    requested_status: str | None = None
    children: list[str] = field(default_factory=list)  # item uuids

    @property
    def finished(self) -> bool:
        return self.status != "IN_PROGRESS"


@dataclass
class LogEntry:
    uuid: str
    launch_uuid: str
    item_uuid: str | None
    time: datetime
    message: str | None
    level: str | None
    file_name: str | None = None
    file_content: bytes | None = None
    file_type: str | None = None
    api: str = "v2"


@dataclass
class RequestRecord:
    method: str
    path: str  # with query string
    endpoint: str
    api: str | None
    project: str | None
    has_auth: bool
    headers: dict[str, str]  # without Authorization
    body: bytes
    status: int | None = None  # None: never answered (hang)
    fault: str | None = None  # "status", "hang" when injected
    time: float = 0.0


@dataclass
class _Fault:
    kind: str  # "status" | "hang"
    match: str | None
    method: str | None
    remaining: int | None  # None = forever
    status: int = 503
    seconds: float = 0.0


# --------------------------------------------------------------------------- routing

_PROJECT_ROUTES = [
    ("POST", r"launch", "start_launch"),
    ("PUT", r"launch/(?P<uuid>[^/]+)/finish", "finish_launch"),
    ("POST", r"item", "start_item"),
    ("POST", r"item/(?P<parent>[^/]+)", "start_item"),
    ("PUT", r"item/(?P<id>\d+)/update", "update_item"),
    ("PUT", r"item/(?P<uuid>[^/]+)", "finish_item"),
    ("POST", r"log/entry", "log_entry"),
    ("POST", r"log", "log_batch"),
    ("GET", r"launch/uuid/(?P<uuid>[^/]+)", "get_launch"),
    ("GET", r"item/uuid/(?P<uuid>[^/]+)", "get_item"),
    ("PUT", r"launch/(?P<id>\d+)/update", "update_launch"),
    ("GET", r"launch", "list_launches"),
    ("GET", r"item", "list_items"),
    ("DELETE", r"launch", "delete_launches"),
    ("DELETE", r"launch/(?P<id>\d+)", "delete_launch"),
    ("GET", r"settings", "settings"),
]
_V1_ONLY = {
    "get_launch",
    "get_item",
    "update_launch",
    "update_item",
    "list_launches",
    "delete_launches",
    "delete_launch",
    "settings",
}
_COMPILED = [(m, re.compile(p + r"/?"), name) for m, p, name in _PROJECT_ROUTES]


def _route(method: str, path: str) -> tuple[str, str | None, str | None, dict]:
    """Return (endpoint, api, project, path params)."""
    if path.rstrip("/") == "/api/info" and method == "GET":
        return "info", None, None, {}
    if path.rstrip("/") == "/api/health" and method == "GET":
        return "health", None, None, {}
    if path.rstrip("/") == "/api/users" and method == "GET":
        return "users", None, None, {}
    m = re.fullmatch(r"/api/users/(?P<user>[^/]+)/api-keys(?:/(?P<key>[^/]+))?/?", path)
    if m:
        name = {"GET": "list_api_keys", "POST": "create_api_key"}.get(method)
        if m.group("key") is not None:
            name = "delete_api_key" if method == "DELETE" else None
        if name:
            return name, None, None, {k: unquote(v) for k, v in m.groupdict().items() if v}
    m = re.fullmatch(r"/api/(v1|v2)/([^/]+)/(.+)", path)
    if m:
        api, project, rest = m.group(1), unquote(m.group(2)), m.group(3)
        for meth, rx, name in _COMPILED:
            if meth != method:
                continue
            pm = rx.fullmatch(rest)
            if pm and not (api == "v2" and name in _V1_ONLY):
                return name, api, project, {k: unquote(v) for k, v in pm.groupdict().items()}
        return "unknown", api, project, {}
    return "unknown", None, None, {}


# --------------------------------------------------------------------------- validation helpers


def _req(body: dict, *names: str) -> Any:
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return None


def _check_str(body: dict, key: str, lo: int, hi: int, required: bool) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _bad(f"[Field '{key}' should not be null.]")
        return None
    if not isinstance(value, str):
        raise _bad(f"[Field '{key}' should be a string.]")
    if required and not value.strip():
        raise _bad(f"[Field '{key}' should not contain only white spaces and shouldn't be empty.]")
    if not lo <= len(value) <= hi:
        raise _bad(f"[Field '{key}' should have size from '{lo}' to '{hi}'.]")
    return value


def _check_time(body: dict, key: str) -> datetime:
    value = body.get(key)
    if value is None:
        raise _bad(f"[Field '{key}' should not be null.]")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _bad(f"Cannot parse '{key}': {exc}") from exc


def _check_attributes(body: dict) -> list[dict]:
    attrs = body.get("attributes")
    if attrs is None:
        return []
    if not isinstance(attrs, list):
        raise _bad("[Field 'attributes' should be a list.]")
    if len(attrs) > 256:
        raise _bad("[Field 'attributes' should have size from '0' to '256'.]")
    out = []
    for attr in attrs:
        if not isinstance(attr, dict):
            raise _bad("[Attribute should be an object.]")
        value = attr.get("value")
        if not isinstance(value, str) or not value.strip():
            raise _bad("[Field 'attributes[].value' should not be blank.]")
        key = attr.get("key")
        if key is not None and not isinstance(key, str):
            raise _bad("[Field 'attributes[].key' should be a string.]")
        out.append(
            {
                "key": key[:512] if key else key,
                "value": value[:512],
                "system": bool(attr.get("system", False)),
            }
        )
    return out


def _check_status(body: dict, key: str = "status") -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in STATUSES:
        raise _bad(f"[Field '{key}' has unsupported value '{value}'.]")
    return value.upper()


def _check_bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"[Field '{key}' should be a boolean.]")
    return value


def _public_attrs(attrs: list[dict]) -> list[dict]:
    return [{"key": a["key"], "value": a["value"], "system": a["system"]} for a in attrs]


# --------------------------------------------------------------------------- the server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class RPServer:
    """A ReportPortal API server on 127.0.0.1 for tests. Thread-safe; see module docstring."""

    def __init__(
        self,
        api_keys: set[str] | list[str] | tuple[str, ...] = ("test-key",),
        projects: set[str] | list[str] | tuple[str, ...] = ("proj",),
        *,
        port: int = 0,
        version: str = VERSION,
        user: str = "default",
        latency: float = 0.0,
        record_bodies: bool = True,
        extra_issue_types: dict[str, list[dict]] | None = None,
        api_key_endpoints: bool = True,
        tls: ssl.SSLContext | None = None,
        keep_alive_max: int | None = None,
    ):
        self._lock = threading.RLock()
        self.api_keys: set[str] = set(api_keys)
        self.projects: set[str] = set(projects)
        self.version = version
        self.user = user
        self.record_bodies = record_bodies
        # https with this server context; None: plain http.
        self.tls = tls
        # Close a connection after this many answers, as nginx's keepalive_requests does.
        self.keep_alive_max = keep_alive_max
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        # faults
        self._latency: list[tuple[str | None, float]] = [(None, latency)] if latency else []
        self._faults: list[_Fault] = []
        self._rejected_keys: set[str] = set()
        # state
        self._launches: dict[str, Launch] = {}
        self._launch_by_id: dict[int, str] = {}
        self._items: dict[str, Item] = {}
        self._logs: list[LogEntry] = []
        self._log_uuids: set[str] = set()
        self._requests: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()
        self._violations: list[dict] = []
        self._errors: list[dict] = []
        self._pending: dict[str, list[tuple]] = {}  # missing uuid -> parked v2 operations
        self._next_id = 1
        self._numbers: Counter[str] = Counter()
        self._subtypes = self._default_subtypes(extra_issue_types or {})
        # User API keys (RP >= 5.11): False answers 404 to them, like an older server.
        self.api_key_endpoints = api_key_endpoints
        self._key_meta: dict[str, dict] = {}  # key -> {"id", "name", "created_at"}

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> RPServer:
        """Start listening (again, on the same port after ``stop()``)."""
        with self._lock:
            if self._httpd is not None:
                return self
            self._stopping.clear()
            handler = type("Handler", (_Handler,), {"rp": self})
            self._httpd = _HTTPServer(("127.0.0.1", self._port), handler)
            if self.tls is not None:  # the handshake happens as a connection is accepted
                self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
            self._port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"rp-server-{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop open connections: clients get "connection refused"."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            self._stopping.set()
            conns = list(self._connections)
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(5)

    down = stop
    up = start
    close = stop

    def __enter__(self) -> RPServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ fault injection

    def set_latency(self, seconds: float, match: str | None = None) -> None:
        """Delay every (matching) request by ``seconds`` before it is handled. 0 removes it."""
        with self._lock:
            self._latency = [(m, s) for m, s in self._latency if m != match]
            if seconds:
                self._latency.append((match, seconds))

    def fail_next(
        self,
        n: int | None = 1,
        status: int = 503,
        match: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests (``None``: all) with ``status`` unprocessed.

        ``match`` is an endpoint name (``"start_item"``, see ``ENDPOINTS``) or a regular
        expression searched in ``"METHOD /path?query"``; ``None`` matches every request.
        Schedules queue up: ``fail_next(2, 503); fail_next(1, 500)`` gives 503, 503, 500.
        """
        with self._lock:
            self._faults.append(_Fault("status", match, method, n, status=status))

    def fail_always(self, status: int = 500, match: str | None = None, method: str | None = None):
        self.fail_next(None, status, match, method)

    def hang(
        self,
        seconds: float = 30.0,
        n: int | None = None,
        match: str | None = None,
        method: str | None = None,
    ) -> None:
        """Read the next ``n`` (``None``: all) matching requests but never answer them: hold the
        connection for ``seconds`` (or until ``stop()``/``clear_faults()``), then close it."""
        with self._lock:
            self._faults.append(_Fault("hang", match, method, n, seconds=seconds))

    def reject_key(self, key: str) -> None:
        """Answer 401 to requests authenticated with ``key`` (until ``accept_key``)."""
        with self._lock:
            self._rejected_keys.add(key)

    def accept_key(self, key: str) -> None:
        with self._lock:
            self._rejected_keys.discard(key)
            self.api_keys.add(key)

    def clear_faults(self) -> None:
        """Remove latency, status schedules, hangs (releasing hung connections), key rejections."""
        with self._lock:
            self._latency, self._faults = [], []
            self._rejected_keys.clear()
            self._stopping.set()
            self._stopping = threading.Event()

    # ------------------------------------------------------------------ introspection

    @property
    def launches(self) -> list[Launch]:
        """All launches (copies), in start order."""
        with self._lock:
            return [copy.deepcopy(x) for x in self._launches.values()]

    def launch(self, uuid: str | None = None) -> Launch:
        """The launch with ``uuid``, or the only launch if ``uuid`` is None."""
        with self._lock:
            if uuid is None:
                if len(self._launches) != 1:
                    raise AssertionError(f"expected exactly one launch, have {len(self._launches)}")
                return copy.deepcopy(next(iter(self._launches.values())))
            return copy.deepcopy(self._launches[uuid])

    def items(self, launch_uuid: str | None = None) -> list[Item]:
        """All items (copies) in start order, optionally of one launch."""
        with self._lock:
            return [
                copy.deepcopy(i)
                for i in self._items.values()
                if launch_uuid is None or i.launch_uuid == launch_uuid
            ]

    def item(self, uuid: str) -> Item:
        with self._lock:
            return copy.deepcopy(self._items[uuid])

    def leaves(self, launch_uuid: str | None = None) -> list[Item]:
        """The tests: items with hasStats and no hasStats children, in start order."""
        with self._lock:
            return [
                copy.deepcopy(i)
                for i in self._items.values()
                if (launch_uuid is None or i.launch_uuid == launch_uuid) and self._is_leaf(i)
            ]

    def tree(self, launch_uuid: str | None = None) -> list[dict]:
        """The launch's items as nested dicts: name, type, status, codeRef, children, ..."""
        with self._lock:
            launch = self._launches[launch_uuid] if launch_uuid else self.launch()

            def node(u: str) -> dict:
                i = self._items[u]
                return {
                    "uuid": i.uuid,
                    "name": i.name,
                    "type": i.type,
                    "status": i.status,
                    "codeRef": i.code_ref,
                    "testCaseId": i.test_case_id,
                    "hasStats": i.has_stats,
                    "retry": i.retry,
                    "issue": copy.deepcopy(i.issue),
                    "children": [node(c) for c in i.children],
                }

            return [node(u) for u in launch.roots]

    def logs(self, launch_uuid: str | None = None, item_uuid: str | None = None) -> list[LogEntry]:
        """Stored logs (copies); ``item_uuid=""`` selects launch-level logs only."""
        with self._lock:
            out = []
            for log in self._logs:
                if launch_uuid is not None and log.launch_uuid != launch_uuid:
                    continue
                if item_uuid == "" and log.item_uuid is not None:
                    continue
                if item_uuid and log.item_uuid != item_uuid:
                    continue
                out.append(copy.copy(log))
            return out

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def counts(self) -> Counter[str]:
        """Requests received per endpoint name (including faulted ones)."""
        with self._lock:
            return Counter(self._counts)

    def count(self, endpoint: str | None = None) -> int:
        with self._lock:
            return sum(self._counts.values()) if endpoint is None else self._counts[endpoint]

    @property
    def violations(self) -> list[dict]:
        """Rule breaks a test should never cause: v2 business errors (dropped), v2 messages still
        waiting for a missing launch/item, items started in a finished launch, launches/parents
        finished before their items, logs for unknown items or with missing attachments."""
        with self._lock:
            out = list(self._violations)
            for missing, ops in self._pending.items():
                for op in ops:
                    out.append(
                        {
                            "api": "v2",
                            "endpoint": op[0],
                            "status": 404,
                            "code": op[3],
                            "message": f"still waiting for '{missing}' (would be parked)",
                        }
                    )
            return out

    @property
    def errors(self) -> list[dict]:
        """Every error response this server produced by validation (401/400/404/406/500),
        not counting injected faults."""
        with self._lock:
            return list(self._errors)

    def assert_clean(self) -> None:
        """Raise AssertionError if any violation or validation error was recorded."""
        problems = self.violations + self.errors
        if problems:
            raise AssertionError(
                "ReportPortal test server saw problems:\n" + "\n".join(map(str, problems))
            )

    def received_bytes(self) -> bytes:
        """Every byte received (request lines, headers, bodies) except Authorization headers:
        ``assert secret.encode() not in rp.received_bytes()``."""
        with self._lock:
            parts = []
            for r in self._requests:
                parts.append(f"{r.method} {r.path} HTTP/1.1\r\n".encode())
                parts.extend(f"{k}: {v}\r\n".encode() for k, v in r.headers.items())
                parts.append(b"\r\n" + r.body + b"\r\n")
            return b"".join(parts)

    def leaks(self, secret: str) -> list[str]:
        """Where ``secret`` (or its URL-quoted form) was received outside Authorization headers:
        ``["POST /api/v2/proj/log body", ...]``; empty list if nowhere."""
        forms = {secret.encode(), quote(secret, safe="").encode(), quote_plus(secret).encode()}
        found = []
        with self._lock:
            for r in self._requests:
                where = {
                    "path": r.path.encode(),
                    "headers": "\n".join(f"{k}: {v}" for k, v in r.headers.items()).encode(),
                    "body": r.body,
                }
                for name, data in where.items():
                    if any(f in data for f in forms):
                        found.append(f"{r.method} {r.path.split('?')[0]} {name}")
        return found

    def wait_until(self, predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
        """Poll ``predicate()`` until true or ``timeout``; returns the last result."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def reset(self) -> None:
        """Forget stored launches, items, logs, requests, counts, violations and errors."""
        with self._lock:
            self._launches.clear()
            self._launch_by_id.clear()
            self._items.clear()
            self._logs.clear()
            self._log_uuids.clear()
            self._requests.clear()
            self._counts.clear()
            self._violations.clear()
            self._errors.clear()
            self._pending.clear()

    # ------------------------------------------------------------------ request pipeline

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._requests.append(rec)
            self._counts[rec.endpoint] += 1

    def _take_fault(self, endpoint: str, method: str, target: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if not self._matches(fault.match, fault.method, endpoint, method, target):
                    continue
                if fault.remaining is not None:
                    if fault.remaining <= 0:
                        continue
                    fault.remaining -= 1
                return copy.copy(fault)
            return None

    def _delay(self, endpoint: str, method: str, target: str) -> float:
        with self._lock:
            return sum(
                s for m, s in self._latency if self._matches(m, None, endpoint, method, target)
            )

    @staticmethod
    def _matches(match, fmethod, endpoint, method, target) -> bool:
        if fmethod and fmethod.upper() != method:
            return False
        if match is None or match == endpoint:
            return True
        if match in ENDPOINTS:
            return False
        return re.search(match, f"{method} {target}") is not None

    def _authorize(self, headers: dict[str, str], project: str | None) -> None:
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        with self._lock:
            ok = key is not None and key in self.api_keys and key not in self._rejected_keys
        if not ok:
            raise RPError(401, ACCESS_DENIED, "Full authentication is required / invalid API key")
        if project is not None and project not in self.projects:
            raise RPError(
                404,
                PROJECT_NOT_FOUND,
                f"Project '{project}' not found. Did you use correct project name?",
            )

    def _error(self, exc: RPError, endpoint: str, api: str | None, record: bool = True) -> None:
        if record:
            self._errors.append(
                {
                    "api": api,
                    "endpoint": endpoint,
                    "status": exc.status,
                    "code": exc.code,
                    "message": exc.message,
                }
            )

    def _violate(self, endpoint: str, api: str | None, status: int, code: int, message: str):
        self._violations.append(
            {"api": api, "endpoint": endpoint, "status": status, "code": code, "message": message}
        )

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # ------------------------------------------------------------------ handlers

    def handle(self, endpoint, api, project, params, query, headers, body: bytes):
        """Process one request; return (status, json-able body)."""
        if endpoint == "info":
            return 200, {
                "build": {"version": self.version, "name": "Service API", "repo": "service-api"},
                "extensions": {},
            }
        if endpoint == "health":
            return 200, {"status": "UP"}
        try:
            self._authorize(headers, project)
            if endpoint == "users":
                return 200, {
                    "id": 1,
                    "userId": self.user,
                    "email": f"{self.user}@example.invalid",
                    "fullName": self.user,
                    "accountType": "INTERNAL",
                    "userRole": "USER",
                    "assignedProjects": {
                        p: {"projectRole": "PROJECT_MANAGER", "entryType": "INTERNAL"}
                        for p in sorted(self.projects)
                    },
                }
            if endpoint in ("list_api_keys", "create_api_key", "delete_api_key"):
                return self._api_keys_request(endpoint, params, headers, body)
            if endpoint == "unknown":
                raise RPError(404, 4040 if project else 404, "Not found")
            if endpoint == "log_batch":
                return self._log_batch(api, project, headers, body)
            data = None
            if endpoint in {
                "start_launch",
                "finish_launch",
                "start_item",
                "finish_item",
                "log_entry",
                "update_launch",
                "update_item",
            } or (endpoint == "delete_launches"):
                try:
                    data = json.loads(body or b"null")
                except ValueError as exc:
                    raise _bad(f"Cannot parse JSON: {exc}") from exc
                if not isinstance(data, dict):
                    raise _bad("Request body should be a JSON object.")
            with self._lock:
                return getattr(self, "_h_" + endpoint)(api, project, params, query, data)
        except RPError as exc:
            with self._lock:
                self._error(exc, endpoint, api)
            return exc.status, {"errorCode": exc.code, "message": exc.message}

    def _run(self, endpoint: str, api: str, fn, *args) -> Any:
        """Run a business-rule step: v1 raises, v2 records (or parks NOT_FOUND) and returns None."""
        try:
            result = fn(*args)
        except RPError as exc:
            if api == "v1":
                raise
            if exc.code in NOT_FOUND_CODES and exc.missing:
                self._pending.setdefault(exc.missing, []).append((endpoint, fn, args, exc.code))
            else:
                self._violate(endpoint, api, exc.status, exc.code, exc.message)
            return None
        return result

    def _created(self, uuid: str) -> None:
        """Re-apply v2 operations that were waiting for ``uuid`` (the consumer's retry)."""
        for endpoint, fn, args, _ in self._pending.pop(uuid, []):
            self._run(endpoint, "v2", fn, *args)

    # --- user API keys

    def _key_record(self, key: str) -> dict:
        """Id, name and creation time of a key: ``name_<base64>`` keys are named by their prefix."""
        meta = self._key_meta.get(key)
        if meta is None:
            name = key.rsplit("_", 1)[0] if "_" in key else f"legacy-{len(self._key_meta) + 1}"
            created = int(time.time() * 1000)
            meta = {"id": 100 + len(self._key_meta), "name": name, "created_at": created}
            self._key_meta[key] = meta
        return meta

    def _api_keys_request(self, endpoint, params, headers, body):
        if not self.api_key_endpoints:
            raise RPError(404, 404, "Not found")
        if params["user"] != "1":  # the only user; another user's keys need an administrator
            raise RPError(403, ACCESS_DENIED, "You do not have enough permissions.")
        with self._lock:
            for key in sorted(self.api_keys):  # ids in a stable order, not the set's
                self._key_record(key)
            keys = sorted(self.api_keys, key=lambda k: self._key_record(k)["id"])
            if endpoint == "list_api_keys":
                items = [{**self._key_record(k), "user_id": 1, "last_used_at": None} for k in keys]
                return 200, {"items": items}
            if endpoint == "delete_api_key":
                for key in keys:
                    if str(self._key_record(key)["id"]) == params["key"]:
                        self.api_keys.discard(key)
                        return 200, {"message": f"Api key with ID = '{params['key']}' was deleted."}
                raise RPError(404, 40422, f"Api key with ID '{params['key']}' not found")
            try:
                name = json.loads(body or b"null")["name"]
            except (ValueError, TypeError, KeyError):
                raise _bad("Field 'name' should not be null.") from None
            if not isinstance(name, str) or not 1 <= len(name) <= 40:
                raise _bad("Field 'name' should have size from '1' to '40'.")
            if any(self._key_record(k)["name"] == name for k in keys):
                raise RPError(409, 4091, f"Api key with name '{name}' already exists")
            key = f"{name}_{uuidlib.uuid4().hex}"
            self.api_keys.add(key)
            return 201, {**self._key_record(key), "user_id": 1, "api_key": key}

    # --- launches

    def _h_start_launch(self, api, project, params, query, data):
        name = _check_str(data, "name", 1, 256, True)
        start = _check_time(data, "startTime")
        attrs = _check_attributes(data)
        mode = (data.get("mode") or "DEFAULT").upper()
        if mode not in MODES:
            raise _bad(f"[Field 'mode' has unsupported value '{data['mode']}'.]")
        rerun = _check_bool(data, "rerun", False)
        uuid = data.get("uuid") or str(uuidlib.uuid4())
        if not isinstance(uuid, str):
            raise _bad("[Field 'uuid' should be a string.]")
        result = self._run(
            "start_launch",
            api,
            self._do_start_launch,
            api,
            project,
            uuid,
            name,
            start,
            attrs,
            mode,
            rerun,
            data.get("rerunOf"),
            data.get("description"),
        )
        if api == "v1" and result is not None:
            return 201, {"id": result.uuid, "number": result.number}
        return 201, {"id": result.uuid if result is not None else uuid}

    def _do_start_launch(self, api, project, uuid, name, start, attrs, mode, rerun, rerun_of, desc):
        if rerun:
            target = None
            if rerun_of:
                target = self._launches.get(rerun_of)
            else:
                same = [
                    x for x in self._launches.values() if x.name == name and x.project == project
                ]
                target = same[-1] if same else None
            if target is None:
                raise RPError(404, LAUNCH_NOT_FOUND, f"Launch '{rerun_of or name}' not found.")
            target.status, target.end_time, target.rerun = "IN_PROGRESS", None, True
            target.attributes.extend(attrs)
            if desc is not None:
                target.description = desc
            target.mode = mode
            return target
        if uuid in self._launches:
            raise RPError(500, UNCLASSIFIED, f"Unclassified error: duplicate launch uuid '{uuid}'")
        self._numbers[name] += 1
        launch = Launch(
            uuid=uuid,
            id=self._new_id(),
            number=self._numbers[name],
            name=name,
            start_time=start,
            project=project,
            api=api,
            description=desc,
            mode=mode,
            attributes=attrs,
            owner=self.user,
        )
        self._launches[uuid] = launch
        self._launch_by_id[launch.id] = uuid
        self._created(uuid)
        return launch

    def _h_finish_launch(self, api, project, params, query, data):
        end = _check_time(data, "endTime")
        status = _check_status(data)
        attrs = _check_attributes(data)
        uuid = params["uuid"]
        launch = self._run(
            "finish_launch",
            api,
            self._do_finish_launch,
            api,
            uuid,
            end,
            status,
            attrs,
            data.get("description"),
        )
        body = {"id": uuid, "link": f"{self.url}/ui/#{project}/launches/all/{uuid}"}
        if api == "v1" and launch is not None:
            body["number"] = launch.number
        return 200, body

    def _do_finish_launch(self, api, uuid, end, status, attrs, desc):
        launch = self._launches.get(uuid)
        if launch is None:
            raise RPError(404, LAUNCH_NOT_FOUND, f"Launch '{uuid}' not found.", missing=uuid)
        if launch.finished:
            raise RPError(
                406,
                FINISH_LAUNCH_NOT_ALLOWED,
                f"Finish launch is not allowed. Launch '{uuid}' already finished with status "
                f"'{launch.status}'",
            )
        if end < launch.start_time:
            raise RPError(
                406,
                FINISH_TIME_EARLIER,
                f"Finish time '{end.isoformat()}' should be later than start time "
                f"'{launch.start_time.isoformat()}' for launch '{uuid}'",
            )
        open_items = [
            self._items[u] for u in self._descendants(launch.roots) if not self._items[u].finished
        ]
        if open_items:
            self._violate(
                "finish_launch",
                api,
                200,
                0,
                f"launch '{uuid}' finished before all its items were finished: "
                + ", ".join(f"'{i.name}'" for i in open_items[:10])
                + (" ..." if len(open_items) > 10 else ""),
            )
            for item in reversed(open_items):  # leaves first
                self._finish(item, end, status or "INTERRUPTED", None, forced=True)
        launch.attributes.extend(attrs)
        if desc is not None:
            launch.description = desc
        launch.end_time = end
        launch.requested_status = status
        launch.status = status or self._computed(launch.roots)
        return launch

    # --- items

    def _h_start_item(self, api, project, params, query, data):
        name = _check_str(data, "name", 1, 1024, True)
        start = _check_time(data, "startTime")
        itype = data.get("type")
        if not isinstance(itype, str) or itype.upper() not in ITEM_TYPES:
            raise _bad(f"[Field 'type' has unsupported value '{itype}'.]")
        launch_uuid = _req(data, "launchUuid", "launch_id")
        if not isinstance(launch_uuid, str) or not launch_uuid:
            raise _bad("[Field 'launchUuid' should not be null.]")
        attrs = _check_attributes(data)
        params_ = data.get("parameters")
        if params_ is not None:
            if not isinstance(params_, list) or any(
                not isinstance(p, dict) or not isinstance(p.get("key"), str) for p in params_
            ):
                raise _bad("[Field 'parameters[].key' should not be null.]")
            params_ = [{"key": p["key"], "value": p.get("value")} for p in params_]
        for key in ("testCaseId", "uniqueId"):
            _check_str(data, key, 0, 1024, False)
        code_ref = data.get("codeRef")
        has_stats = _check_bool(data, "hasStats", True)
        retry = _check_bool(data, "retry", False)
        uuid = data.get("uuid") or str(uuidlib.uuid4())
        if not isinstance(uuid, str):
            raise _bad("[Field 'uuid' should be a string.]")
        item = Item(
            uuid=uuid,
            id=0,
            launch_uuid=launch_uuid,
            parent_uuid=params.get("parent"),
            name=name,
            type=itype.upper(),
            start_time=start,
            api=api,
            description=data.get("description"),
            code_ref=code_ref,
            test_case_id=data.get("testCaseId"),
            unique_id=data.get("uniqueId"),
            parameters=params_,
            attributes=attrs,
            has_stats=has_stats,
            retry=retry,
            retry_of=data.get("retryOf"),
        )
        self._run("start_item", api, self._do_start_item, api, item)
        body = {"id": uuid}
        if api == "v1":
            body["uniqueId"] = item.unique_id or f"auto:{uuid}"
        return 201, body

    def _do_start_item(self, api, item: Item):
        launch = self._launches.get(item.launch_uuid)
        if launch is None:
            raise RPError(
                404,
                LAUNCH_NOT_FOUND,
                f"Launch '{item.launch_uuid}' not found.",
                missing=item.launch_uuid,
            )
        parent = None
        if item.parent_uuid is not None:
            parent = self._items.get(item.parent_uuid)
            if parent is None:
                raise RPError(
                    404,
                    TEST_ITEM_NOT_FOUND,
                    f"Test Item '{item.parent_uuid}' not found.",
                    missing=item.parent_uuid,
                )
            if parent.launch_uuid != launch.uuid:
                raise _bad(f"Parent item '{parent.uuid}' belongs to another launch.")
            if item.start_time < parent.start_time:
                raise RPError(
                    406,
                    CHILD_START_EARLIER,
                    f"Child start time '{item.start_time.isoformat()}' can't be earlier than "
                    f"parent's '{parent.start_time.isoformat()}'",
                )
            if not parent.has_stats and item.has_stats:
                raise _bad(
                    f"Unable to add a not nested step item, because parent item with ID = "
                    f"'{parent.uuid}' is a nested step"
                )
        elif item.retry or item.retry_of:
            raise RPError(400, BAD_RETRY, "Root test item can't be a retry.")
        if item.start_time < launch.start_time:
            raise RPError(
                406,
                CHILD_START_EARLIER,
                f"Start time of child '{item.start_time.isoformat()}' item should be same or later "
                f"than start time '{launch.start_time.isoformat()}' of the launch",
            )
        if item.uuid in self._items:
            raise RPError(
                500, UNCLASSIFIED, f"Unclassified error: duplicate item uuid '{item.uuid}'"
            )
        if launch.finished:
            self._violate(
                "start_item",
                api,
                201,
                0,
                f"item '{item.name}' started in launch '{launch.uuid}' which is already finished",
            )
        item.id = self._new_id()
        self._items[item.uuid] = item
        (parent.children if parent else launch.roots).append(item.uuid)
        self._created(item.uuid)
        return item

    def _h_finish_item(self, api, project, params, query, data):
        end = _check_time(data, "endTime")
        status = _check_status(data)
        attrs = _check_attributes(data)
        issue = data.get("issue")
        if issue is not None and (
            not isinstance(issue, dict)
            or not isinstance(_req(issue, "issueType", "issue_type"), str)
        ):
            raise _bad("[Field 'issue.issueType' should not be null.]")
        launch_uuid = _req(data, "launchUuid", "launch_id")
        if api == "v2" and not launch_uuid:
            raise _bad("[Field 'launchUuid' should not be null.]")
        uuid = params["uuid"]
        self._run(
            "finish_item",
            api,
            self._do_finish_item,
            api,
            uuid,
            end,
            status,
            issue,
            attrs,
            data.get("description"),
            data.get("testCaseId"),
        )
        return 200, {"message": f"TestItem with ID = '{uuid}' successfully finished."}

    def _do_finish_item(self, api, uuid, end, status, issue, attrs, desc, test_case_id):
        item = self._items.get(uuid)
        if item is None:
            raise RPError(404, TEST_ITEM_NOT_FOUND, f"Test Item '{uuid}' not found.", missing=uuid)
        if end < item.start_time:
            raise RPError(
                406,
                FINISH_TIME_EARLIER,
                f"Finish time '{end.isoformat()}' should be later than start time "
                f"'{item.start_time.isoformat()}' for test item '{uuid}'",
            )
        if issue is not None:
            locator = _req(issue, "issueType", "issue_type")
            if locator.upper() != "NOT_ISSUE" and locator.lower() not in self._locators():
                raise RPError(404, ISSUE_TYPE_NOT_FOUND, f"Issue Type '{locator}' not found.")
        launch = self._launches[item.launch_uuid]
        if launch.finished:
            self._violate(
                "finish_item",
                api,
                200,
                0,
                f"item '{item.name}' finished after its launch '{launch.uuid}' was finished",
            )
        open_children = [
            self._items[u] for u in self._descendants(item.children) if not self._items[u].finished
        ]
        if open_children:
            self._violate(
                "finish_item",
                api,
                200,
                0,
                f"item '{item.name}' finished before its children: "
                + ", ".join(f"'{i.name}'" for i in open_children[:10]),
            )
            for child in reversed(open_children):
                self._finish(child, end, status or "INTERRUPTED", None, forced=True)
        if attrs:
            item.attributes.extend(attrs)
        if desc is not None:
            item.description = desc
        if test_case_id is not None:
            item.test_case_id = test_case_id
        was_finished = item.finished
        self._finish(item, end, status, issue)
        if was_finished:
            self._refresh_ancestors(item)
        return item

    def _finish(self, item: Item, end, status, issue, forced: bool = False) -> None:
        item.end_time = end
        item.finish_count += 1
        item.requested_status = None if forced else status
        if item.children:
            item.status = status or self._computed(item.children)
        else:
            item.status = status or "INTERRUPTED"
        if not self._is_leaf(item):
            item.issue = None
        elif issue is not None:
            locator = _req(issue, "issueType", "issue_type")
            if locator.upper() == "NOT_ISSUE":
                item.issue = None
            else:
                item.issue = {
                    "issueType": locator.lower(),
                    "comment": issue.get("comment"),
                    "autoAnalyzed": bool(issue.get("autoAnalyzed", False)),
                    "ignoreAnalyzer": bool(issue.get("ignoreAnalyzer", False)),
                    "externalSystemIssues": issue.get("externalSystemIssues") or [],
                }
        elif item.status in {"FAILED", "SKIPPED"} and item.has_stats:
            item.issue = {
                "issueType": "ti001",
                "comment": None,
                "autoAnalyzed": False,
                "ignoreAnalyzer": False,
                "externalSystemIssues": [],
            }
        else:
            item.issue = None

    def _refresh_ancestors(self, item: Item) -> None:
        """A finished item changed status: recompute finished ancestors (and the launch) whose
        status was computed, as the real server's status-change handler does."""
        parent_uuid = item.parent_uuid
        while parent_uuid is not None:
            parent = self._items[parent_uuid]
            if parent.finished and parent.requested_status is None:
                parent.status = self._computed(parent.children)
            parent_uuid = parent.parent_uuid
        launch = self._launches[item.launch_uuid]
        if launch.finished and launch.requested_status is None:
            launch.status = self._computed(launch.roots)

    def _is_leaf(self, item: Item) -> bool:
        """A test in statistics terms: counted, with no counted children (nested steps aside)."""
        return item.has_stats and not any(self._items[c].has_stats for c in item.children)

    def _descendants(self, roots: list[str]) -> list[str]:
        """Pre-order list of the items under ``roots`` (parents before children)."""
        out, stack = [], list(reversed(roots))
        while stack:
            u = stack.pop()
            out.append(u)
            stack.extend(reversed(self._items[u].children))
        return out

    def _computed(self, roots: list[str]) -> str:
        for u in self._descendants(roots):
            item = self._items[u]
            if item.has_stats and item.status not in GOOD_STATUSES:
                return "FAILED"
        return "PASSED"

    # --- logs

    def _check_log(self, data: dict) -> tuple:
        if not isinstance(data, dict):
            raise _bad("Log request should be a JSON object.")
        when = _check_time(data, "time")
        launch_uuid = _req(data, "launchUuid", "launch_id")
        if not isinstance(launch_uuid, str) or not launch_uuid:
            raise _bad("[Field 'launchUuid' should not be null.]")
        item_uuid = _req(data, "itemUuid", "item_id")
        file_name = None
        if isinstance(data.get("file"), dict):
            file_name = data["file"].get("name")
        return when, launch_uuid, item_uuid, file_name

    def _save_log(self, api, data: dict, files: dict[str, tuple[bytes, str]] | None, endpoint):
        when, launch_uuid, item_uuid, file_name = self._check_log(data)
        uuid = data.get("uuid") or str(uuidlib.uuid4())
        entry = LogEntry(
            uuid=uuid,
            launch_uuid=launch_uuid,
            item_uuid=item_uuid,
            time=when,
            message=data.get("message"),
            level=data.get("level"),
            file_name=file_name,
            api=api,
        )
        if file_name is not None:
            if files is not None and file_name in files:
                entry.file_content, entry.file_type = files[file_name]
            else:
                self._violate(endpoint, api, 201, 0, f"attachment '{file_name}' not in the request")
        self._run(endpoint, api, self._do_save_log, api, entry, endpoint)
        return uuid

    def _do_save_log(self, api, entry: LogEntry, endpoint):
        if entry.launch_uuid not in self._launches:
            raise RPError(
                404,
                LAUNCH_NOT_FOUND,
                f"Launch '{entry.launch_uuid}' not found.",
                missing=entry.launch_uuid,
            )
        if entry.item_uuid is not None:
            item = self._items.get(entry.item_uuid)
            if item is None:
                if api == "v2":
                    raise RPError(
                        404,
                        TEST_ITEM_NOT_FOUND,
                        f"Test Item '{entry.item_uuid}' not found.",
                        missing=entry.item_uuid,
                    )
                self._violate(
                    endpoint,
                    api,
                    201,
                    TEST_ITEM_NOT_FOUND,
                    f"log for unknown item '{entry.item_uuid}' saved as a launch log",
                )
                entry.item_uuid = None
            elif item.launch_uuid != entry.launch_uuid:
                raise _bad(f"Item '{item.uuid}' does not belong to launch '{entry.launch_uuid}'")
        if entry.uuid in self._log_uuids:
            raise RPError(
                500, UNCLASSIFIED, f"Unclassified error: duplicate log uuid '{entry.uuid}'"
            )
        self._log_uuids.add(entry.uuid)
        self._logs.append(entry)
        return entry

    def _h_log_entry(self, api, project, params, query, data):
        return 201, {"id": self._save_log(api, data, None, "log_entry")}

    def _log_batch(self, api, project, headers, body: bytes):
        ctype = headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise _bad(f"Cannot parse JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise _bad("Request body should be a JSON object.")
            with self._lock:
                return 201, {"id": self._save_log(api, data, None, "log_batch")}
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.startswith("multipart/") or not m:
            raise _bad("Request should be multipart/form-data.")
        parts = _parse_multipart(body, m.group(1).encode())
        json_parts = [p for p in parts if p["name"] == "json_request_part"]
        if len(json_parts) != 1:
            raise _bad("Required request part 'json_request_part' is not present.")
        try:
            elements = json.loads(json_parts[0]["data"])
        except ValueError as exc:
            raise _bad(f"Cannot parse json_request_part: {exc}") from exc
        if not isinstance(elements, list):
            raise _bad("json_request_part should be a JSON array.")
        files = {
            p["filename"]: (p["data"], p["content_type"])
            for p in parts
            if p["name"] != "json_request_part" and p["filename"] is not None
        }
        responses = []
        with self._lock:
            for element in elements:
                try:
                    responses.append({"id": self._save_log(api, element, files, "log_batch")})
                except RPError as exc:
                    self._violate("log_batch", api, exc.status, exc.code, exc.message)
                    responses.append({"message": exc.message, "stackTrace": ""})
        return 201, {"responses": responses}

    # --- reads and management (v1)

    def _stats(self, roots: list[str]) -> dict:
        ex = Counter()
        defects: dict[str, Counter] = {}
        items = [self._items[u] for u in self._descendants(roots)]
        superseded = {i.retry_of for i in items if i.retry_of}
        for item in items:
            if not self._is_leaf(item) or item.uuid in superseded:
                continue
            if item.status == "IN_PROGRESS":
                continue
            ex["total"] += 1
            if item.status == "PASSED":
                ex["passed"] += 1
            elif item.status == "SKIPPED":
                ex["skipped"] += 1
            elif item.status in {"FAILED", "INTERRUPTED", "STOPPED", "CANCELLED"}:
                ex["failed"] += 1
            if item.issue:
                loc = item.issue["issueType"]
                group = LOCATOR_PREFIX.get(loc[:2], "to_investigate")
                defects.setdefault(group, Counter())["total"] += 1
                defects[group][loc] += 1
        return {"executions": dict(ex), "defects": {k: dict(v) for k, v in defects.items()}}

    def _launch_json(self, launch: Launch) -> dict:
        return {
            "id": launch.id,
            "uuid": launch.uuid,
            "number": launch.number,
            "name": launch.name,
            "description": launch.description,
            "owner": launch.owner,
            "status": launch.status,
            "mode": launch.mode,
            "startTime": _ms(launch.start_time),
            "endTime": _ms(launch.end_time),
            "lastModified": _ms(launch.end_time or launch.start_time),
            "attributes": _public_attrs(launch.attributes),
            "statistics": self._stats(launch.roots),
            "rerun": launch.rerun,
            "hasRetries": any(self._items[u].retry for u in self._descendants(launch.roots)),
            "approximateDuration": 0.0,
            "analysing": [],
        }

    def _item_json(self, item: Item) -> dict:
        parent = self._items.get(item.parent_uuid) if item.parent_uuid else None
        return {
            "id": item.id,
            "uuid": item.uuid,
            "name": item.name,
            "type": item.type,
            "status": item.status,
            "description": item.description,
            "codeRef": item.code_ref,
            "testCaseId": item.test_case_id,
            "uniqueId": item.unique_id,
            "parameters": item.parameters or [],
            "attributes": _public_attrs(item.attributes),
            "issue": copy.deepcopy(item.issue),
            "hasChildren": bool(item.children),
            "hasStats": item.has_stats,
            "retry": item.retry,
            "parent": parent.id if parent else None,
            "launchId": self._launches[item.launch_uuid].id,
            "startTime": _ms(item.start_time),
            "endTime": _ms(item.end_time),
            "statistics": self._stats([item.uuid]),
        }

    def _project_launch(self, project: str, launch: Launch | None, ref: str) -> Launch:
        if launch is None or launch.project != project:
            raise RPError(
                404, LAUNCH_NOT_FOUND, f"Launch '{ref}' not found. Did you use correct Launch ID?"
            )
        return launch

    def _h_get_launch(self, api, project, params, query, data):
        launch = self._project_launch(project, self._launches.get(params["uuid"]), params["uuid"])
        return 200, self._launch_json(launch)

    def _h_get_item(self, api, project, params, query, data):
        item = self._items.get(params["uuid"])
        if item is None or self._launches[item.launch_uuid].project != project:
            raise RPError(404, TEST_ITEM_NOT_FOUND, f"Test Item '{params['uuid']}' not found.")
        return 200, self._item_json(item)

    def _h_update_launch(self, api, project, params, query, data):
        lid = int(params["id"])
        launch = self._project_launch(
            project, self._launches.get(self._launch_by_id.get(lid, "")), str(lid)
        )
        attrs = _check_attributes(data) if data.get("attributes") is not None else None
        mode = data.get("mode")
        if mode is not None and (not isinstance(mode, str) or mode.upper() not in MODES):
            raise _bad(f"[Field 'mode' has unsupported value '{mode}'.]")
        if attrs is not None:
            launch.attributes = [a for a in launch.attributes if a["system"]] + [
                a for a in attrs if not a["system"]
            ]
        if mode is not None:
            launch.mode = mode.upper()
        if data.get("description") is not None:
            launch.description = data["description"]
        return 200, {"message": f"Launch with ID = '{lid}' successfully updated."}

    def _h_update_item(self, api, project, params, query, data):
        iid = int(params["id"])
        item = next((i for i in self._items.values() if i.id == iid), None)
        if item is None:
            raise RPError(404, TEST_ITEM_NOT_FOUND, f"Test Item '{iid}' not found.")
        if data.get("attributes") is not None:
            attrs = _check_attributes(data)
            item.attributes = [a for a in item.attributes if a["system"]] + [
                a for a in attrs if not a["system"]
            ]
        if data.get("description") is not None:
            item.description = data["description"]
        return 200, {"message": f"TestItem with ID = '{iid}' successfully updated."}

    def _h_list_launches(self, api, project, params, query, data):
        def one(key: str, default: str | None = None) -> str | None:
            return query.get(key, [default])[0]

        try:
            page = int(one("page.page", "1"))
            size = int(one("page.size", "20"))
        except ValueError as exc:
            raise _bad(str(exc)) from exc
        if page < 1 or size < 1:
            raise _bad("page.page and page.size should be positive")
        launches = [x for x in self._launches.values() if x.project == project]
        try:
            for key, values in query.items():
                value = values[0]
                if key == "filter.btw.startTime":
                    lo, hi = (parse_time(v) for v in value.split(";", 1))
                    launches = [x for x in launches if lo <= x.start_time <= hi]
                elif key == "filter.lt.startTime":
                    launches = [x for x in launches if x.start_time < parse_time(value)]
                elif key == "filter.gt.startTime":
                    launches = [x for x in launches if x.start_time > parse_time(value)]
                elif key == "filter.eq.name":
                    launches = [x for x in launches if x.name == value]
                elif key == "filter.cnt.name":
                    launches = [x for x in launches if value.lower() in x.name.lower()]
                elif key == "filter.eq.status":
                    launches = [x for x in launches if x.status == value.upper()]
        except ValueError as exc:
            raise _bad(f"Incorrect filter value: {exc}") from exc
        sort = one("page.sort", "startTime,desc") or "startTime,desc"
        field_, _, direction = sort.partition(",")
        keyfn = {
            "startTime": lambda x: x.start_time,
            "name": lambda x: x.name,
            "number": lambda x: x.number,
            "id": lambda x: x.id,
        }.get(field_, lambda x: x.start_time)
        launches.sort(key=lambda x: (keyfn(x), x.id), reverse=direction.lower() == "desc")
        total = len(launches)
        chunk = launches[(page - 1) * size : page * size]
        return 200, {
            "content": [self._launch_json(x) for x in chunk],
            "page": {
                "number": page,
                "size": size,
                "totalElements": total,
                "totalPages": (total + size - 1) // size,
            },
        }

    def _h_list_items(self, api, project, params, query, data):
        """The items of one launch (``filter.eq.launchId`` is required, as on RP), by id."""

        def one(key: str, default: str | None = None) -> str | None:
            return query.get(key, [default])[0]

        try:
            page = int(one("page.page", "1"))
            size = int(one("page.size", "20"))
            launch_id = int(one("filter.eq.launchId") or "")
        except ValueError as exc:
            raise _bad(f"Incorrect filter value: {exc}") from exc
        if page < 1 or size < 1:
            raise _bad("page.page and page.size should be positive")
        launch = self._project_launch(
            project, self._launches.get(self._launch_by_id.get(launch_id, "")), str(launch_id)
        )
        items = sorted(
            (self._items[u] for u in self._descendants(launch.roots)), key=lambda x: x.id
        )
        total = len(items)
        return 200, {
            "content": [self._item_json(x) for x in items[(page - 1) * size : page * size]],
            "page": {
                "number": page,
                "size": size,
                "totalElements": total,
                "totalPages": (total + size - 1) // size,
            },
        }

    def _delete(self, launch: Launch) -> None:
        for u in self._descendants(launch.roots):
            del self._items[u]
        self._logs = [x for x in self._logs if x.launch_uuid != launch.uuid]
        del self._launches[launch.uuid]
        del self._launch_by_id[launch.id]

    def _h_delete_launches(self, api, project, params, query, data):
        ids = data.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
            raise _bad("[Field 'ids' should be a non-empty list of numeric launch ids.]")
        removed, not_found, errors = [], [], []
        for lid in ids:
            launch = self._launches.get(self._launch_by_id.get(lid, ""))
            if launch is None or launch.project != project:
                not_found.append(lid)
            elif not launch.finished:
                errors.append(
                    {"errorCode": 4063, "message": f"Launch '{lid}' is not finished (IN_PROGRESS)."}
                )
            else:
                self._delete(launch)
                removed.append(lid)
        return 200, {"successfullyRemoved": removed, "notFound": not_found, "errors": errors}

    def _h_delete_launch(self, api, project, params, query, data):
        lid = int(params["id"])
        launch = self._project_launch(
            project, self._launches.get(self._launch_by_id.get(lid, "")), str(lid)
        )
        if not launch.finished:
            raise RPError(406, 4063, f"Launch '{lid}' is not finished (IN_PROGRESS).")
        self._delete(launch)
        return 200, {"message": f"Launch with ID = '{lid}' successfully deleted."}

    @staticmethod
    def _default_subtypes(extra: dict[str, list[dict]]) -> dict:
        out, next_id = {}, 1
        for group, (_, locator, short, long_name, color) in DEFECT_GROUPS.items():
            out[group] = [
                {
                    "id": next_id,
                    "locator": locator,
                    "typeRef": group,
                    "longName": long_name,
                    "shortName": short,
                    "color": color,
                }
            ]
            next_id += 1
        for group, subtypes in extra.items():
            for st in subtypes:
                out[group].append({"id": next_id, "typeRef": group, "color": "#999999", **st})
                next_id += 1
        return out

    def _locators(self) -> set[str]:
        return {st["locator"].lower() for group in self._subtypes.values() for st in group}

    def _h_settings(self, api, project, params, query, data):
        return 200, {
            "project": sorted(self.projects).index(project) + 1,
            "subTypes": copy.deepcopy(self._subtypes),
        }


# --------------------------------------------------------------------------- HTTP plumbing


def _parse_multipart(body: bytes, boundary: bytes) -> list[dict]:
    """Split a multipart/form-data body into parts: name, filename, content_type, data."""
    delimiter = b"--" + boundary
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise _bad("Malformed multipart part.")
        data = data.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disp)
        filename = re.search(r'\bfilename="([^"]*)"', disp)
        parts.append(
            {
                "name": name.group(1) if name else None,
                "filename": filename.group(1) if filename else None,
                "content_type": headers.get("content-type", "application/octet-stream"),
                "data": data,
            }
        )
    return parts


_PHRASES = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden"}
_PHRASES |= {
    404: "Not Found",
    406: "Not Acceptable",
    409: "Conflict",
    408: "Request Timeout",
    429: "Too Many Requests",
}
_PHRASES |= {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_PHRASES |= {504: "Gateway Timeout", 507: "Insufficient Storage"}


class _Headers:
    """Request headers: names as sent for ``items()``, case-insensitive ``get``."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self.lower = {name.lower(): value for name, value in pairs}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.lower.get(name.lower(), default)

    def items(self) -> list[tuple[str, str]]:
        return self.pairs


class _Handler(BaseHTTPRequestHandler):
    rp: RPServer
    protocol_version = "HTTP/1.1"
    server_version = "rp-test-server"
    max_headers = 100

    def parse_request(self) -> bool:
        """The request line and headers, parsed plainly: the stdlib goes through the email
        package, which was most of this server's CPU per request, CPU that a benchmark
        shares with the client it measures."""
        self.command = None
        self.request_version = self.default_request_version
        self.close_connection = True
        words = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n").split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            self.send_error(400, f"Bad request line {' '.join(words)[:100]!r}")
            return False
        self.command, self.path, self.request_version = words
        pairs: list[tuple[str, str]] = []
        while True:
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = str(line, "iso-8859-1").partition(":")
            if len(line) > 65536 or not colon or len(pairs) >= self.max_headers:
                self.send_error(431 if colon else 400, "Bad or too many headers")
                return False
            pairs.append((name.strip(), value.strip()))
        self.headers = _Headers(pairs)  # type: ignore[assignment]
        connection = (self.headers.get("Connection") or "").lower()
        self.close_connection = connection == "close" or (
            self.request_version == "HTTP/1.0" and connection != "keep-alive"
        )
        expect = (self.headers.get("Expect") or "").lower()
        return expect != "100-continue" or self.handle_expect_100()

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.rp._lock:
            self.rp._connections.add(self.connection)

    def finish(self) -> None:
        with self.rp._lock:
            self.rp._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(out)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.answered = getattr(self, "answered", 0) + 1
        if self.rp.keep_alive_max and self.answered >= self.rp.keep_alive_max:
            self.close_connection = True
        head = (
            f"HTTP/1.1 {status} {_PHRASES.get(status, 'Status')}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Date: {self.date_time_string()}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'close' if self.close_connection else 'keep-alive'}\r\n\r\n"
        ).encode()
        self.wfile.write(head + body)

    def _dispatch(self) -> None:
        rp = self.rp
        body = self._read_body()
        split = urlsplit(self.path)
        method = self.command
        endpoint, api, project, params = _route(method, split.path)
        headers = dict(self.headers.lower)
        rec = RequestRecord(
            method=method,
            path=self.path,
            endpoint=endpoint,
            api=api,
            project=project,
            has_auth="authorization" in headers,
            headers={k: v for k, v in self.headers.items() if k.lower() != "authorization"},
            body=body if rp.record_bodies else b"",
            time=time.time(),
        )
        rp._record(rec)
        delay = rp._delay(endpoint, method, self.path)
        if delay:
            time.sleep(delay)
        fault = rp._take_fault(endpoint, method, self.path)
        if fault is not None and fault.kind == "hang":
            rec.fault = "hang"
            stopping = rp._stopping
            stopping.wait(fault.seconds)
            self.close_connection = True
            return
        if fault is not None:
            rec.fault, rec.status = "status", fault.status
            self._send(fault.status, {"errorCode": 5000, "message": f"injected {fault.status}"})
            return
        query = parse_qs(split.query, keep_blank_values=True)
        try:
            status, payload = rp.handle(endpoint, api, project, params, query, headers, body)
        except Exception as exc:  # a bug here must surface as a 500, not a hung client
            status, payload = 500, {"errorCode": 5000, "message": f"test server error: {exc!r}"}
            with rp._lock:
                rp._errors.append(
                    {
                        "api": api,
                        "endpoint": endpoint,
                        "status": 500,
                        "code": 5000,
                        "message": repr(exc),
                    }
                )
        rec.status = status
        self._send(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch
