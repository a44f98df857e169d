"""The v1 reporting API of one ReportPortal instance: connections, answers, retries.

Requests go to the synchronous v1 API over keep-alive connections from plain sockets,
not through ``reportportal-client``: client 5.7.12 never sends a launch or log ``uuid``,
so a replay would duplicate every log and could not resume a launch; it reports through
v2, where business-rule errors are dropped silently; it swallows errors instead of
reporting them, and sleeps 3 s before finishing a launch. v1 answers truthfully, and the
idempotent UUIDs make concurrency and retries safe.

Retries: connection errors and 408/425/429/5xx are retried with capped exponential
backoff, up to ``instance.retries`` times. A start that got a 5xx or no answer is first
looked up by UUID (it may have been saved): found means done. 400/401/403/404/406 are
never retried; 401/403 stop the instance's delivery as "API key rejected". A deadline
over the whole delivery keeps a hanging server from blocking forever.
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
from typing import Any, NamedTuple
from urllib.parse import quote

from testviper.config import Instance
from testviper.reporter.masking import Masker

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 507})
NEVER_RETRY = frozenset({400, 401, 403, 404, 406})
BACKOFF, BACKOFF_CAP = 0.25, 8.0
FINISH_LAUNCH_NOT_ALLOWED = 40023  # "already finished": a replayed finish is done
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


class Response(NamedTuple):
    status: int
    reason: str
    data: bytes
    close: bool = False  # the server closes the connection after this answer


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

    def exchange(self, request: bytes) -> Response:
        """Send ``request`` and wait for its answer. Malformed answers raise
        ``HTTPException`` or ``ValueError``."""
        try:
            self.sock.sendall(request)
        except (BlockingIOError, ssl.SSLWantWriteError):
            raise TimeoutError("send timed out") from None
        eof = False
        while (answer := parse_answer(self.buffer, eof)) is None:
            eof = not self.fill()
        return answer

    def fill(self) -> bool:
        """Receive what has arrived into the buffer; False at the end of the stream.
        Nothing in time (or, non-blocking, nothing yet) raises ``TimeoutError``.

        Over TLS one receive of ``READ_SIZE`` takes a whole record (16 KB at most), so no
        decrypted bytes are left waiting inside the SSL object, where a selector could
        not see them; the next record waits in the socket, where it can."""
        try:
            chunk = self.sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise TimeoutError("receive timed out") from None
        self.buffer += chunk
        return bool(chunk)


def parse_answer(buffer: bytearray, eof: bool) -> Response | None:
    """The first whole answer in ``buffer``, removed from it; None while more is to come.

    ``eof``: the stream has ended and nothing more will come, so there is no None: what
    is there is the answer, or it is cut short (``IncompleteRead``, ``RemoteDisconnected``
    when there is nothing at all). Parsing starts again from the top each time more has
    arrived: a head is a few hundred bytes, and a body is only measured until whole.
    """
    pos = 0
    while True:  # a "100 Continue" is followed by the real answer
        if (found := _line(buffer, pos, eof)) is None:
            return None
        line, pos = found
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection")
        version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(line.decode("latin-1"))
        if (head := _headers(buffer, pos, eof)) is None:
            return None
        headers, pos = head
        status = int(code)
        if status != 100:
            break
    connection = headers.get(b"connection", b"").lower()
    close = b"close" in connection or (version == "HTTP/1.0" and b"keep-alive" not in connection)
    if status < 200 or status in (204, 304):
        data = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        if (body := _chunked(buffer, pos, eof)) is None:
            return None
        data, pos = body
    elif b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(buffer) - pos < length:
            if eof:
                raise http.client.IncompleteRead(bytes(buffer[pos:]), length - len(buffer) + pos)
            return None
        data, pos = bytes(buffer[pos : pos + length]), pos + length
    elif eof:  # the body ends with the connection
        data, pos, close = bytes(buffer[pos:]), len(buffer), True
    else:
        return None
    del buffer[:pos]
    return Response(status, reason.strip(), data, close)


def _line(buffer: bytearray, pos: int, eof: bool) -> tuple[bytes, int] | None:
    """The line at ``pos`` with its end, and where the next starts; at the end of the
    stream what is left (maybe nothing)."""
    end = buffer.find(b"\n", pos)
    if end < 0:
        if len(buffer) - pos > MAX_LINE:
            raise http.client.LineTooLong("answer line")
        return (bytes(buffer[pos:]), len(buffer)) if eof else None
    if end - pos >= MAX_LINE:
        raise http.client.LineTooLong("answer line")
    return bytes(buffer[pos : end + 1]), end + 1


def _headers(buffer: bytearray, pos: int, eof: bool) -> tuple[dict[bytes, bytes], int] | None:
    """The header block at ``pos``, names lower-cased; left as bytes: only three are
    looked at."""
    headers: dict[bytes, bytes] = {}
    for _ in range(MAX_HEADERS + 1):
        if (found := _line(buffer, pos, eof)) is None:
            return None
        line, pos = found
        if line in (b"\r\n", b"\n", b""):
            return headers, pos
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")


def _chunked(buffer: bytearray, pos: int, eof: bool) -> tuple[bytes, int] | None:
    chunks = []
    while True:
        if (found := _line(buffer, pos, eof)) is None:
            return None
        line, pos = found
        if not (size := int(line.split(b";", 1)[0], 16)):
            break
        if len(buffer) - pos < size + 2:  # the chunk and its CRLF
            if eof:
                raise http.client.IncompleteRead(b"".join(chunks))
            return None
        chunks.append(bytes(buffer[pos : pos + size]))
        pos += size + 2
    if (trailers := _headers(buffer, pos, eof)) is None:  # unused
        return None
    return b"".join(chunks), trailers[1]


class Call(NamedTuple):
    """One request of the API, with what it takes to retry and judge it.

    ``body``: sent as JSON; ``multipart``: a log batch, sent as is. ``exists``: where to
    look the created object up by UUID when the answer to its start was lost.
    ``finished_ok``: a launch finish answered "already finished" is done. ``answer``:
    False when the caller ignores a successful answer, so it is not parsed (an item's
    start and finish, twice per test).
    """

    method: str
    path: str
    what: str
    body: Any = None
    multipart: bytes | None = None
    exists: str | None = None
    finished_ok: bool = False
    answer: bool = True

    def encode(self, api: "Api") -> bytes:
        if self.multipart is not None:
            content_type = f"multipart/form-data; boundary={BOUNDARY}"
            return api.encode(self.method, self.path, self.multipart, content_type)
        if self.body is None:  # a GET or DELETE without a body
            return api.encode(self.method, self.path)
        return api.encode(self.method, self.path, _encode(self.body).encode(), "application/json")

    def result(self, answer: Response) -> dict[str, Any]:
        """A successful answer as the caller takes it."""
        return _json(answer.data) if self.answer else {}


class Api:
    """The v1 reporting API of one instance: keep-alive connections, timeouts, retries, a
    deadline.

    Plain sockets on persistent connections (a thread takes an idle one or opens one, see
    ``Connection``; a ``Multiplexer`` takes several) rather than urllib3 or ``requests``:
    measured on loopback, a request through ``http.client`` costs about 0.1 ms of CPU
    instead of 0.23 ms (urllib3) or 0.44 ms (requests), less again without its answer
    parsing, and that CPU is most of a large delivery's time. No netrc, no environment
    credentials: the key goes in the Authorization header only. HTTP(S)_PROXY/NO_PROXY
    are honoured.
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

    def connect(self, timeout: float) -> Connection:
        """A new connection (TLS and proxy tunnel included); ``TransportError`` if none."""
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
            raise self._tls_error(exc) from None
        except TimeoutError:
            raise TransportError("timed out", sent=False, timeout=True) from None
        except OSError as exc:
            raise TransportError(self._short(exc), sent=False) from None
        return Connection(conn)

    def encode(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        root: bool = False,
    ) -> bytes:
        """The request's bytes: head and body."""
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
        return "\r\n".join((*lines, "", "")).encode("latin-1") + (body or b"")

    def timeout(self) -> float:
        """A request's timeout: the instance's, or what is left of the deadline."""
        return min(self.instance.timeout, self._remaining())

    def _send(self, request: bytes) -> Response:
        timeout = self.timeout()
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
        return self._exchange(self.connect(timeout), request, timeout, reused=False)

    def _exchange(self, conn: Connection, request: bytes, timeout: float, reused: bool) -> Response:
        """One request and its answer on ``conn``, which is kept for reuse if it can be."""
        try:
            conn.set_timeout(timeout)
            answer = conn.exchange(request)
        except (http.client.HTTPException, OSError, ValueError) as exc:
            conn.close()
            if reused and isinstance(exc, STALE):
                raise
            raise self.failure(exc) from None
        if answer.close:
            conn.close()
        else:
            self.idle.append(conn)
        return answer

    def failure(self, exc: Exception) -> TransportError | DeliveryError:
        """What a connection's error means once the request went out."""
        if isinstance(exc, TimeoutError):
            return TransportError("timed out", sent=True, timeout=True)
        if isinstance(exc, ssl.SSLError):
            return self._tls_error(exc)
        return TransportError(self._short(exc), sent=True)

    def _tls_error(self, exc: ssl.SSLError) -> DeliveryError:
        """Certificates and protocols do not fix themselves: not retried."""
        return DeliveryError(
            f"TLS error talking to {self.instance.endpoint}: {self._short(exc)}", True
        )

    def request(self, method: str, path: str, *, root: bool = False) -> Response:
        """One attempt, no retry: the raw response; ``TransportError`` without one.
        ``root``: ``path`` is under the server (``/api/info``), not the project."""
        return self._send(self.encode(method, path, root=root))

    def exists(self, path: str) -> bool:
        try:
            return self.request("GET", path).status == 200
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
        See ``Call`` for the options."""
        return self.perform(Call(method, path, what, body, multipart, exists, finished_ok, answer))

    def perform(self, call: Call, first: Response | Exception | None = None) -> dict[str, Any]:
        """Send ``call``, retrying as the module says; return its answer's JSON.

        ``first``: the outcome of an attempt already made elsewhere (an answer, or the
        ``TransportError``/``DeliveryError`` it ended with), counted as the first."""
        name = self.instance.name
        endpoint = self.instance.endpoint
        request = call.encode(self)
        last = ""
        attempts = self.instance.retries + 1
        for attempt in range(attempts):
            if attempt:
                delay = min(BACKOFF * 2 ** (attempt - 1), BACKOFF_CAP)
                if self.stop.wait(min(delay, self._remaining())):
                    raise DeliveryError(f"delivery to {name} stopped")
            try:
                if first is None:
                    resp = self._send(request)
                elif isinstance(first, Exception):
                    raise first
                else:
                    resp = first
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
                    return call.result(resp)
                data = _json(resp.data)
                message = self._message(data, resp)
                if status in (401, 403):
                    raise DeliveryError(
                        f"API key rejected by instance {name} (HTTP {status}: {message})", True
                    )
                if (
                    call.finished_ok
                    and status == 406
                    and data.get("errorCode") == FINISH_LAUNCH_NOT_ALLOWED
                ):
                    return {}
                if status in NEVER_RETRY or (status not in RETRY_STATUSES and status < 500):
                    raise DeliveryError(
                        f"instance {name} rejected {call.what}: HTTP {status}: {message}", True
                    )
                last = f"HTTP {status} from {endpoint}: {message}"
            finally:
                first = None
            # No answer, or an error answer: the request may have been processed anyway.
            if call.exists and self.exists(call.exists):
                return {}  # it was; only its answer was lost
        raise DeliveryError(f"{last} (gave up after {attempts} attempts at {call.what})")

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
