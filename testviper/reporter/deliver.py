"""Deliver one run to one ReportPortal instance, resumably, without duplicates.

The launch is built from the run's journal (``launch.build_launch``): every launch, item
and log has a UUID derived from the run, the instance and its place in the tree, so the
whole launch is known before the first request and any request can be sent again.

Order: start the launch, start items level by level (every item whose parent exists,
concurrently; a test is started and finished in the same task), send the logs in
multipart batches, finish suites deepest first, finish the launch last. A parent is
never finished before its children, the launch never before its items.

Requests go to the synchronous v1 API over keep-alive connections (``http.client``),
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

import contextlib
import http.client
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from testviper.config import Instance, Settings, warn_insecure
from testviper.reporter import outbox
from testviper.reporter.launch import Item, Launch, Log, attribute, build_launch
from testviper.reporter.masking import Masker, masker_for
from testviper.runner.journal import iter_events

WORKERS = 16
LOG_BATCH = 50  # entries per multipart request
LOG_BATCH_BYTES = 4 * 1024 * 1024  # far below RP's 64/128 MB and common proxy limits
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
NEVER_RETRY = frozenset({400, 401, 403, 404, 406})
BACKOFF, BACKOFF_CAP = 0.25, 8.0
SAVE_EVERY = 1.0  # seconds between outbox writes while a level is in progress
FINISH_LAUNCH_NOT_ALLOWED = 40023  # "already finished": a replayed finish is done
# Outbox step: the live stream started the launch, without the coverage attributes.
LIVE_START = "launch:live"
BOUNDARY = "testviper-log-batch-7d1f0a2b3c4d"  # JSON-escaped text cannot contain CRLF--
# What a kept-alive connection closed by the server meanwhile fails with.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
# One encoder for every request body: json.dumps builds a new one per call.
_encode = json.JSONEncoder().encode
MAX_LINE, MAX_HEADERS = 65536, 100  # http.client's limits on an answer's head
READ_SIZE = 65536


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


# --------------------------------------------------------------------------- HTTP


class Response(NamedTuple):
    status: int
    reason: str
    data: bytes


class TransportError(Exception):
    """No HTTP answer. ``sent``: the request may have reached the server (it could not if
    the connection failed); ``timeout``: the server did not answer in time."""

    def __init__(self, detail: str, *, sent: bool, timeout: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.sent, self.timeout = detail, sent, timeout


class Connection:
    """One kept-alive connection. ``http.client`` opens it (TLS, proxy tunnel); requests
    are written and answers read here: ``http.client`` parses every answer's headers with
    the ``email`` package and wraps the socket in a new reader per answer, which together
    cost a third of a large sync's CPU. One buffer per connection, a plain header dict.

    The socket stays in blocking mode and its timeout is the kernel's (``SO_RCVTIMEO``,
    ``SO_SNDTIMEO``): a Python socket timeout puts a ``poll`` before every send and
    receive, and with many threads each extra system call is another hand-over of the
    GIL. A receive or send that times out raises ``TimeoutError``, as before.
    """

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn, self.sock = conn, conn.sock
        self.buffer = bytearray()
        self.timeout: float | None = None
        self.sock.settimeout(None)
        self.set_timeout(conn.timeout)

    def set_timeout(self, timeout: float) -> None:
        # Two system calls each time: usually the timeout is the instance's, unchanged.
        if timeout != self.timeout:
            seconds = max(timeout, 0.001)
            value = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            self.timeout = timeout

    def close(self) -> None:
        self.conn.close()

    def exchange(self, request: bytes) -> tuple[int, str, bytes, bool]:
        """Send ``request``; return the answer's status, reason, body and whether the
        server closes the connection after it. Malformed answers raise ``HTTPException``
        or ``ValueError``."""
        try:
            self.sock.sendall(request)
        except (BlockingIOError, ssl.SSLWantWriteError):
            raise TimeoutError("send timed out") from None
        while True:  # a "100 Continue" is followed by the real answer
            line = self._line()
            if not line:
                raise http.client.RemoteDisconnected("Remote end closed connection")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
                raise http.client.BadStatusLine(line.decode("latin-1"))
            headers = self._headers()
            status = int(code)
            if status != 100:
                break
        connection = headers.get(b"connection", b"").lower()
        close = b"close" in connection or (
            version == "HTTP/1.0" and b"keep-alive" not in connection
        )
        if status < 200 or status in (204, 304):
            data = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            data = self._chunked()
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            data = self._read(length)
            if len(data) < length:
                raise http.client.IncompleteRead(data, length - len(data))
        else:  # the body ends with the connection
            data, close = self._read(None), True
        return status, reason.strip(), data, close

    def _fill(self) -> bool:
        """Receive what has arrived into the buffer; False at the end of the stream."""
        try:
            chunk = self.sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            raise TimeoutError("receive timed out") from None
        self.buffer += chunk
        return bool(chunk)

    def _read(self, size: int | None) -> bytes:
        """``size`` bytes (fewer if the stream ends first), or all until the end."""
        while (size is None or len(self.buffer) < size) and self._fill():
            pass
        size = len(self.buffer) if size is None else size
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _line(self) -> bytes:
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > MAX_LINE:
                raise http.client.LineTooLong("answer line")
            start = len(self.buffer)
            if not self._fill():  # the stream ended: what is left, maybe nothing
                return self._read(len(self.buffer))
        if end >= MAX_LINE:
            raise http.client.LineTooLong("answer line")
        return self._read(end + 1)

    def _headers(self) -> dict[bytes, bytes]:
        """The header block, names lower-cased; left as bytes: only three are looked at."""
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")

    def _chunked(self) -> bytes:
        chunks = []
        while size := int(self._line().split(b";", 1)[0], 16):
            chunk = self._read(size + 2)  # the chunk and its CRLF
            if len(chunk) < size + 2:
                raise http.client.IncompleteRead(b"".join(chunks))
            chunks.append(chunk[:size])
        self._headers()  # trailers, unused
        return b"".join(chunks)


class Api:
    """The v1 reporting API of one instance: keep-alive connections, timeouts, retries, a
    deadline.

    Plain sockets on persistent connections (each worker thread takes an idle one or
    opens one, see ``Connection``) rather than urllib3 or ``requests``: measured on
    loopback, a request through ``http.client`` costs about 0.1 ms of CPU instead of
    0.23 ms (urllib3) or 0.44 ms (requests), less again without its answer parsing, and
    that CPU is most of a large delivery's time. No netrc, no environment credentials: the
    key goes in the Authorization header only. HTTP(S)_PROXY/NO_PROXY are honoured.
    """

    def __init__(self, instance: Instance, key: str, deadline: float, masker: Masker) -> None:
        from urllib.parse import urlsplit

        self.instance = instance
        self.masker = masker
        parts = urlsplit(instance.endpoint)
        self.tls = _tls_context(instance) if parts.scheme == "https" else None
        self.host, self.port = parts.hostname or "", parts.port
        self.proxy = _proxy(parts)
        # Through a plain HTTP proxy the request line carries the absolute URL.
        origin = f"{parts.scheme}://{parts.netloc}" if self.proxy and not self.tls else ""
        self.root = origin + parts.path.rstrip("/")
        self.base = f"{self.root}/api/v1/{quote(instance.project, safe='')}"
        # What http.client would send: the target's Host (also through a proxy or tunnel).
        self.host_header = parts.netloc.rpartition("@")[2]
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        # deque's append and pop are thread-safe (documented): no lock, no lock contention.
        self.idle: deque[Connection] = deque()
        self.deadline_at = time.monotonic() + deadline
        self.deadline = deadline
        self.stop = threading.Event()

    def close(self) -> None:
        while self.idle:
            with contextlib.suppress(IndexError):  # another thread took the last one
                self.idle.pop().close()

    def _remaining(self) -> float:
        remaining = self.deadline_at - time.monotonic()
        if remaining <= 0:
            raise DeliveryError(
                f"instance {self.instance.name} did not complete within the delivery deadline "
                f"({self.deadline:g} s)"
            )
        return remaining

    def _open(self, timeout: float) -> Connection:
        host, port = self.proxy or (self.host, self.port)
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self.tls)
            if self.proxy:
                conn.set_tunnel(self.host, self.port)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.connect()
        except ssl.SSLError as exc:
            raise DeliveryError(
                f"TLS error talking to {self.instance.endpoint}: {self._short(exc)}", True
            ) from None
        except TimeoutError:
            raise TransportError("timed out", sent=False, timeout=True) from None
        except OSError as exc:
            raise TransportError(self._short(exc), sent=False) from None
        return Connection(conn)

    def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        content_type: str | None,
        root: bool = False,
    ) -> Response:
        timeout = min(self.instance.timeout, self._remaining())
        lines = [f"{method} {(self.root if root else self.base) + path} HTTP/1.1"]
        lines.append(f"Host: {self.host_header}")
        lines.append("Accept-Encoding: identity")
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        if "\r" in (text := "".join(lines)) or "\n" in text:
            # A key or path with a line break would inject headers (http.client refused it).
            raise DeliveryError(f"a line break in a request to {self.instance.name}", True)
        request = "\r\n".join((*lines, "", "")).encode("latin-1") + (body or b"")
        try:
            conn: Connection | None = self.idle.pop()
        except IndexError:
            conn = None
        if conn is not None:
            try:
                return self._exchange(conn, request, timeout, reused=True)
            except STALE:
                # Closed by the server while idle: once more on a new connection (every
                # request is idempotent: the UUIDs make it so).
                pass
        return self._exchange(self._open(timeout), request, timeout, reused=False)

    def _exchange(self, conn: Connection, request: bytes, timeout: float, reused: bool) -> Response:
        """One request and its answer on ``conn``, which is kept for reuse if it can be."""
        try:
            conn.set_timeout(timeout)
            status, reason, data, close = conn.exchange(request)
        except TimeoutError:
            conn.close()
            raise TransportError("timed out", sent=True, timeout=True) from None
        except ssl.SSLError as exc:
            conn.close()
            raise DeliveryError(
                f"TLS error talking to {self.instance.endpoint}: {self._short(exc)}", True
            ) from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            conn.close()
            if reused and isinstance(exc, STALE):
                raise
            raise TransportError(self._short(exc), sent=True) from None
        if close:
            conn.close()
        else:
            self.idle.append(conn)
        return Response(status, reason, data)

    def request(self, method: str, path: str, *, root: bool = False) -> Response:
        """One attempt, no retry: the raw response; ``TransportError`` without one.
        ``root``: ``path`` is under the server (``/api/info``), not the project."""
        return self._send(method, path, None, None, root)

    def exists(self, path: str) -> bool:
        try:
            return self._send("GET", path, None, None).status == 200
        except (TransportError, DeliveryError):
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
        answer: bool = True,
    ) -> dict[str, Any]:
        """Send one request (JSON ``body`` or a ``multipart`` log batch); return its JSON.

        ``answer=False``: the caller ignores a successful answer, so it is not parsed (an
        item's start and finish, twice per test)."""
        name = self.instance.name
        endpoint = self.instance.endpoint
        payload: bytes | None
        content_type: str | None
        if multipart is not None:
            payload, content_type = multipart, f"multipart/form-data; boundary={BOUNDARY}"
        elif body is None:  # a GET or DELETE without a body
            payload, content_type = None, None
        else:
            payload, content_type = _encode(body).encode(), "application/json"
        last = ""
        attempts = self.instance.retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = min(BACKOFF * 2 ** (attempt - 1), BACKOFF_CAP)
                if self.stop.wait(min(delay, self._remaining())):
                    raise DeliveryError(f"delivery to {name} stopped")
            try:
                resp = self._send(method, path, payload, content_type)
            except TransportError as exc:
                if not exc.sent:
                    last = f"cannot connect to {endpoint} ({exc.detail})"
                    continue
                if exc.timeout:
                    last = f"no answer from {endpoint} (timeout {self.instance.timeout:g} s)"
                else:  # reset, broken pipe, bad answer
                    last = f"connection to {endpoint} failed ({exc.detail})"
            else:
                status = resp.status
                if 200 <= status < 300:
                    return _json(resp.data) if answer else {}
                data = _json(resp.data)
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
                last = f"HTTP {status} from {endpoint}: {message}"
            # No answer, or an error answer: the request may have been processed anyway.
            if exists and self.exists(exists):
                return {}  # it was; only its answer was lost
        raise DeliveryError(f"{last} (gave up after {attempts} attempts at {what})")

    def _short(self, exc: Exception) -> str:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return self.masker(" ".join(str(text).split()))[:200]

    def _message(self, data: dict[str, Any], resp: Response) -> str:
        text = str(data.get("message") or "") or resp.data.decode("utf-8", "replace")
        text = " ".join(text.split())[:200] or resp.reason or "no message"
        return self.masker(text)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _tls_context(instance: Instance) -> ssl.SSLContext:
    if not instance.verify_ssl:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _proxy(parts: Any) -> tuple[str, int | None] | None:
    """The environment's proxy for the endpoint, unless NO_PROXY exempts its host."""
    import urllib.request
    from urllib.parse import urlsplit

    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    found = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return found.hostname or "", found.port


# --------------------------------------------------------------------------- delivery


class Delivery:
    """One launch to one instance, skipping the steps the outbox entry says are done."""

    def __init__(
        self,
        api: Api,
        launch: Launch,
        entry: outbox.Entry,
        masker: Masker,
        save: Callable[[outbox.Entry], None],
    ) -> None:
        self.api, self.launch, self.entry, self.mask = api, launch, entry, masker
        self._save = save
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

    def save(self) -> None:
        """Write the entry: a copy taken under the lock, as workers add steps meanwhile,
        written outside it, so they do not wait for the disk."""
        with self.lock:
            snapshot = replace(self.entry, done=set(self.entry.done))
        self._save(snapshot)

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
                self.finish_launch()
                self.mark("launch:finish")

    def parallel(self, tasks: Iterable[Callable[[], None]]) -> None:
        """Run ``tasks`` on the pool; on the first failure stop the rest and raise it."""
        # Each worker takes the next task itself from a deque (its pops are thread-safe
        # without a lock): no future per task, and this thread does not wake for every
        # finished request to hand out the next one (with tens of thousands of requests,
        # those hand-offs cost as much CPU as the requests did).
        pending = deque(tasks)
        if not pending:
            return

        def work() -> None:
            while True:
                try:
                    task = pending.popleft()
                except IndexError:
                    return
                self.guard(task)
                self.maybe_save()

        for worker in [self.pool.submit(work) for _ in range(WORKERS)]:
            worker.result()
        self.save()
        if self.error is not None:
            raise self.error

    def maybe_save(self) -> None:
        now = time.monotonic()
        with self.lock:  # workers call this too: one of them saves
            if now - self.saved_at <= SAVE_EVERY:
                return
            self.saved_at = now
        self.save()

    def guard(self, task: Callable[[], None]) -> None:
        if self.api.stop.is_set():
            return
        try:
            task()
        except DeliveryError as exc:
            with self.lock:
                self.error = self.error or exc
            self.api.stop.set()

    def finish_launch(self) -> None:
        body: dict[str, Any] = {"endTime": iso(self.launch.end)}
        if self.done(LIVE_START):
            # Started live, before coverage was measured: the finish adds it (RP appends
            # the attributes of a finish request to the launch's).
            late = [a for a in self.launch.attributes if is_coverage(a)]
            if late:
                body["attributes"] = self.mask.attributes(late)
        self.api.call(
            "PUT",
            f"/launch/{self.launch.uuid}/finish",
            "the launch finish",
            body=body,
            finished_ok=True,
        )

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
            "POST",
            path,
            f"the start of '{item.name}'",
            body=body,
            exists=f"/item/uuid/{item.uuid}",
            answer=False,
        )

    def finish_item(self, item: Item) -> None:
        body: dict[str, Any] = {"endTime": iso(item.end), "launchUuid": self.launch.uuid}
        if item.status:
            body["status"] = item.status
        if item.issue:
            body["issue"] = item.issue
        what = f"the finish of '{item.name}'"
        self.api.call("PUT", f"/item/{item.uuid}", what, body=body, answer=False)

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


class LogBatcher:
    """Cuts the logs, taken in launch order, into batches with a stable id for the outbox.

    The cut depends only on the logs before it, so a replay and a live stream, which
    both take the logs in journal order, cut the same batches and skip the ones done.
    A batch is given out as soon as it is full: the live stream sends it at once.
    """

    def __init__(self) -> None:
        self.batch: list[Log] = []
        self.size = 0

    def add(self, log: Log) -> tuple[str, list[Log]] | None:
        """Take one log; return the batch it closed, if any."""
        length = len(log.message.encode()) + 300
        closed = self.flush() if self.size + length > LOG_BATCH_BYTES else None
        self.batch.append(log)
        self.size += length
        if closed is None and len(self.batch) >= LOG_BATCH:
            closed = self.flush()
        return closed

    def flush(self) -> tuple[str, list[Log]] | None:
        """The batch being filled, closed now (None if empty)."""
        if not self.batch:
            return None
        batch, self.batch, self.size = self.batch, [], 0
        return f"logs:{batch[0].uuid}", batch


def _batches(items: list[Item]) -> Iterator[tuple[str, list[Log]]]:
    """Every log batch of a launch, the same on every attempt."""
    batcher = LogBatcher()
    for item in items:
        for log in item.logs:
            if closed := batcher.add(log):
                yield closed
    if closed := batcher.flush():
        yield closed


# --------------------------------------------------------------------------- entry points


def is_coverage(attr: dict[str, Any]) -> bool:
    return str(attr.get("key") or "").startswith("coverage:")


def launch_attributes(
    settings: Settings, instance: Instance, run_id: str, run_dir: Path, history: Any
) -> list[dict[str, Any]]:
    """Configured attributes, coverage (total and per component), git, label and run id.

    Without ``history`` (a run still going, streamed live) there is no coverage yet and
    the rest comes from the run directory.
    """
    import sqlalchemy as sa

    from testviper.history import schema

    attrs = [attribute(k, v) for k, v in instance.launch.attributes.items()]
    run, components = None, []
    if history is not None:
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
    launch: Launch | None = None,
) -> DeliveryResult:
    """Deliver (or resume delivering) one run to one instance; never raises for RP trouble.

    Whatever is not delivered stays in the outbox with the reason; history's
    ``deliveries`` row mirrors the outcome. An entry another process is delivering right
    now (``inv run`` while ``inv sync`` runs) is left to it. ``launch``: the run's launch
    for this instance, already built from the whole journal (by ``--live``).
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
        return _deliver(settings, instance, run_id, run_dir, history, masker, deadline, launch)


def _deliver(
    settings: Settings,
    instance: Instance,
    run_id: str,
    run_dir: Path,
    history: Any,
    masker: Masker | None,
    deadline: float | None,
    launch: Launch | None,
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

    lock = threading.Lock()

    def save(snapshot: outbox.Entry = entry) -> None:
        with lock:
            outbox.save_entry(state, snapshot)

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
        attributes = launch_attributes(settings, instance, run_id, Path(run_dir), history)
        if launch is not None:
            launch.attributes = attributes  # now with coverage, which streaming could not know
        else:
            try:
                launch = build_launch(
                    run_id,
                    instance.name,
                    instance.launch.name or settings.project_name,
                    iter_events(Path(run_dir) / JOURNAL),
                    description=instance.launch.description,
                    attributes=attributes,
                )
            except OSError as exc:
                raise DeliveryError(
                    f"cannot read the run's journal ({exc.strerror})", True
                ) from None
        if not launch.start:  # no session start, no test: a run killed at once
            launch.start = launch.end = time.time()
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
    launches: dict[str, Launch] | None = None,
    **kwargs: Any,
) -> list[DeliveryResult]:
    """Deliver a run to every enabled instance (or the ones given), one thread each.

    ``launches``: launches already built whole, by instance name (``--live`` hands them
    over); the others are built from the journal."""
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
                deliver,
                settings,
                inst,
                run_id,
                run_dir,
                history=history,
                masker=masker,
                launch=(launches or {}).get(inst.name),
                **kwargs,
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
