"""api.Connection reads ReportPortal's answers itself (http.client's header parsing
was a third of a large sync's CPU): every shape of HTTP/1.x answer, from a real socket."""

import contextlib
import http.client
import socket
import threading

import pytest

from testviper.reporter.api import Connection

REQUEST = b"GET /api/info HTTP/1.1\r\nHost: x\r\n\r\n"


class Scripted:
    """A TCP server on loopback that answers the n-th request of a connection with the
    n-th of ``answers`` (raw bytes), then closes if told to."""

    def __init__(self, answers: list[bytes], close_after: bool = False) -> None:
        self.answers, self.close_after = answers, close_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            for answer in self.answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(answer)
            if not self.close_after:
                # Hold the connection until the client closes it; 5 s at most, so a
                # client that never times out fails its test instead of hanging it.
                conn.settimeout(5)
                with contextlib.suppress(TimeoutError):
                    conn.recv(1)

    def connect(self) -> Connection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.connect()
        return Connection(conn)


def exchange(answers: list[bytes], close_after: bool = False) -> list[tuple]:
    server = Scripted(answers, close_after)
    conn = server.connect()
    try:
        return [conn.exchange(REQUEST) for _ in answers]
    finally:
        conn.close()
        server.sock.close()


def test_content_length_answers_on_one_kept_alive_connection() -> None:
    ok = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n"
        b'{"id": 1}'
    )
    assert exchange([ok, ok.replace(b"201 Created", b"200 OK")]) == [
        (201, "Created", b'{"id": 1}', False),
        (200, "OK", b'{"id": 1}', False),
    ]


def test_chunked_answer_with_extension_and_trailer() -> None:
    body = b"4;ext=1\r\nWiki\r\n6\r\npedia \r\n0\r\nX-Trailer: 1\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    then = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert exchange([answer, then]) == [
        (200, "OK", b"Wikipedia ", False),
        (200, "OK", b"ok", False),  # the trailer was consumed: the next answer reads clean
    ]


def test_100_continue_then_the_answer_and_no_body_statuses() -> None:
    cont = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert exchange([cont, empty]) == [(200, "OK", b"ok", False), (204, "No Content", b"", False)]


def test_when_the_server_closes_after_the_answer() -> None:
    close = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
    assert exchange([close], close_after=True) == [(404, "Not Found", b"no", True)]
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"  # 1.0 without keep-alive
    assert exchange([old], close_after=True) == [(200, "OK", b"ok", True)]
    unbounded = b"HTTP/1.1 200 OK\r\n\r\nto the end"  # no length: the body ends with the stream
    assert exchange([unbounded], close_after=True) == [(200, "OK", b"to the end", True)]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
        (b"garbage\r\n\r\n", http.client.BadStatusLine),
        (b"", http.client.RemoteDisconnected),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", http.client.HTTPException),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            http.client.IncompleteRead,
        ),
    ],
    ids=["short body", "bad status line", "closed at once", "too many headers", "short chunk"],
)
def test_malformed_answers_raise_what_the_retry_logic_expects(answer: bytes, error: type) -> None:
    with pytest.raises(error):
        exchange([answer], close_after=True)


@pytest.mark.parametrize(
    "partial", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], ids=["none", "part"]
)
def test_a_silent_server_times_out(partial: bytes) -> None:
    """The socket's timeout is the kernel's: no answer (or half of one) in time is a
    TimeoutError, which the retry logic reports as "no answer", never a closed connection."""
    server = Scripted([partial])
    conn = server.connect()
    conn.set_timeout(0.3)
    try:
        with pytest.raises(TimeoutError):
            conn.exchange(REQUEST)
    finally:
        conn.close()
        server.sock.close()


def test_a_large_body_arrives_whole() -> None:
    body = bytes(range(256)) * 40_000  # 10 MB, read in many pieces
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    [(status, _, data, close)] = exchange([head + body])
    assert (status, data == body, close) == (200, True, False)
