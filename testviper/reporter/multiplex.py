"""Many requests to one instance over a few kept-alive connections, from one thread.

A delivery is thousands of small requests (each test's start and finish, log batches),
independent of each other within a level. Sent from a pool of threads, each request
cost two hand-overs of the GIL and a thread wake-up, which on a 2-core machine was most
of a large sync's CPU. Here one thread keeps up to ``size`` non-blocking connections busy
and waits for all of them at once (``selectors``).

Only the common case is handled here: a request answered 2xx. Anything else (an error
answer, a timeout, a broken connection, the deadline) hands the task, with its request
and what happened to it, to ``fallback``, which goes on with it on a worker thread
through ``Api.perform``: retries, look-ups by UUID and the error reports are the same
code for both.

A task is a generator (``Steps``) that yields its requests (``Call``) one at a time and
receives each one's answer; it may record its progress between them.
"""

import contextlib
import http.client
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from testviper.reporter.api import (
    STALE,
    Api,
    Call,
    Connection,
    DeliveryError,
    Response,
    TransportError,
    parse_answer,
)

Steps = Generator[Call, dict[str, Any], None]
# Continues a task elsewhere; its future tells when it has.
Fallback = Callable[[Steps, Call, Response | Exception | None], Future[None]]
OPENERS = 4  # connections opened at once (TLS handshakes take round trips)


@dataclass(slots=True, eq=False)  # compared and hashed by identity: kept in a set
class _Slot:
    """A connection and the request it is busy with, if any."""

    conn: Connection
    steps: Steps | None = None
    call: Call | None = None
    out: memoryview | None = None  # what is left to send
    due: float = 0.0  # when the answer is late
    reused: bool = False  # it has served a request before this one


def advance(steps: Steps, answer: dict[str, Any] | None) -> Call | None:
    """Give a task the answer to its last request (None to start it); its next request,
    or None when it is done."""
    try:
        return steps.send(answer)  # type: ignore[arg-type]  # None starts a generator
    except StopIteration:
        return None


class Multiplexer:
    """Runs tasks for one instance over up to ``size`` connections (see the module).

    While ``troubled`` tasks are with the fallback, no new task starts: when the server
    fails every request, as many tasks are tried as a pool of threads would have, not
    all of them, before the fallback's retries give up and stop the delivery.
    """

    def __init__(
        self,
        api: Api,
        size: int,
        troubled: int,
        fallback: Fallback,
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.api, self.size, self.troubled = api, size, troubled
        self._fallback, self.tick = fallback, tick
        self.pending: deque[Steps] = deque()
        self.ready: deque[tuple[Steps, Call]] = deque()  # tasks with their next request
        self.free: list[_Slot] = []
        self.busy: set[_Slot] = set()
        self.live = 0  # connections open or being opened
        self.unreachable = False  # a connection could not be opened: open no more for now
        self.opened: deque[Connection | None] = deque()  # from the opener threads
        self.handed: list[Future[None]] = []  # tasks with the fallback
        self.closed = False
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.openers = ThreadPoolExecutor(OPENERS, thread_name_prefix="tv-connect")

    def run(self, tasks: Iterable[Steps]) -> None:
        """Run every task here or hand it to the fallback, then ``close``."""
        try:
            self.pending.extend(tasks)
            while not self.idle:
                self.turn(None)
        finally:
            self.close()

    def add(self, steps: Steps) -> None:
        self.pending.append(steps)

    @property
    def idle(self) -> bool:
        """No task is left here (the fallback may still have some)."""
        return not (self.busy or self.ready or self.pending)

    def close(self) -> None:
        """Drop the tasks not started; give the connections back to the API for reuse."""
        self.pending.clear()
        self.ready.clear()
        # A connection still being opened (a host that does not answer) is not waited
        # for: its opener closes it (see _open).
        self.closed = True
        self.openers.shutdown(wait=False, cancel_futures=True)
        self._adopted()
        for slot in list(self.busy):
            self._drop(slot)  # its request may be processed or not: steps stay undone
        for slot in self.free:
            self.selector.unregister(slot.conn.sock)
            slot.conn.sock.setblocking(True)  # the kernel's timeouts still apply
            self.api.idle.append(slot.conn)
        self.selector.close()
        self.wake_r.close()
        self.wake_w.close()

    def wake(self) -> None:
        """Make a ``turn`` waiting in another thread return now."""
        with contextlib.suppress(OSError):  # closed meanwhile
            self.wake_w.send(b"x")

    def turn(self, wait: float | None) -> None:
        """Start what can start, then wait up to ``wait`` seconds (None: as long as it
        takes) for answers and handle the ones that came."""
        self._adopted()
        if self.api.stop.is_set():
            self.pending.clear()
            self.ready.clear()
        if self.handed:
            still = [future for future in self.handed if not future.done()]
            if len(still) < len(self.handed) and not self.api.stop.is_set():
                self.unreachable = False  # the fallback got through: the server is back
            self.handed = still
        while self.api.idle and self._short():
            with contextlib.suppress(IndexError):  # another thread took the last one
                self._adopt(self.api.idle.pop(), reused=True)
        while not self.unreachable and self._short():
            self.live += 1
            self.openers.submit(self._open)
        while self.free and (self.ready or self.pending):
            if self.ready:
                steps, call = self.ready.popleft()
            elif len(self.handed) >= self.troubled:
                break
            elif (first := advance(steps := self.pending.popleft(), None)) is not None:
                call = first
            else:
                continue
            self._send(self.free.pop(), steps, call)
        if self.unreachable and not self.live:  # the fallback retries and reports it
            for steps, call in self.ready:
                self.fallback(steps, call, None)
            for steps in self.pending:
                if (call := advance(steps, None)) is not None:
                    self.fallback(steps, call, None)
            self.ready.clear()
            self.pending.clear()
        due = min((slot.due - time.monotonic() for slot in self.busy), default=None)
        if due is not None:
            wait = max(0.0, due if wait is None else min(wait, due))
        elif self.idle and wait is None:
            return
        for key, events in self.selector.select(wait):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    self.wake_r.recv(4096)
            elif events & selectors.EVENT_WRITE:
                self._write(key.data)
            else:
                self._read(key.data)
        now = time.monotonic()
        for slot in [s for s in self.busy if s.due <= now]:
            self._broken(slot, TimeoutError("timed out"))

    def _short(self) -> bool:
        """Fewer spare connections than tasks waiting for one, and room for another."""
        spare = self.live - len(self.busy)
        return self.live < self.size and spare < len(self.ready) + len(self.pending)

    def fallback(self, steps: Steps, call: Call, first: Response | Exception | None) -> None:
        future = self._fallback(steps, call, first)
        self.handed.append(future)
        future.add_done_callback(lambda _: self.wake())

    # ------------------------------------------------------------------ connections

    def _open(self) -> None:
        """In an opener thread: a new connection for the loop, or None if it failed."""
        try:
            conn: Connection | None = self.api.connect(self.api.timeout())
        except (TransportError, DeliveryError):
            conn = None
        if self.closed and conn is not None:
            conn.close()
            return
        self.opened.append(conn)
        self.wake()

    def _adopted(self) -> None:
        while self.opened:
            conn = self.opened.popleft()
            self.live -= 1
            if conn is None:
                self.unreachable = True
            else:
                self._adopt(conn, reused=False)

    def _adopt(self, conn: Connection, reused: bool) -> None:
        conn.sock.setblocking(False)
        slot = _Slot(conn, reused=reused)
        self.selector.register(conn.sock, selectors.EVENT_READ, slot)
        self.free.append(slot)
        self.live += 1

    def _drop(self, slot: _Slot) -> None:
        self.selector.unregister(slot.conn.sock)
        slot.conn.close()
        self.busy.discard(slot)
        if slot in self.free:
            self.free.remove(slot)
        self.live -= 1

    # ------------------------------------------------------------------ requests

    def _send(self, slot: _Slot, steps: Steps, call: Call) -> None:
        try:
            timeout = self.api.timeout()
            request = call.encode(self.api)
        except DeliveryError as exc:  # the deadline has passed, or a request is refused
            self.free.append(slot)
            self.fallback(steps, call, exc)
            return
        slot.steps, slot.call = steps, call
        slot.out, slot.due = memoryview(request), time.monotonic() + timeout
        self.busy.add(slot)
        self._write(slot)

    def _write(self, slot: _Slot) -> None:
        assert slot.out is not None
        try:
            sent = slot.conn.sock.send(slot.out)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        except OSError as exc:
            self._broken(slot, exc)
            return
        slot.out = slot.out[sent:]
        events = selectors.EVENT_WRITE if slot.out else selectors.EVENT_READ
        if events != self.selector.get_key(slot.conn.sock).events:
            self.selector.modify(slot.conn.sock, events, slot)

    def _read(self, slot: _Slot) -> None:
        conn = slot.conn
        try:
            eof = not conn.fill()
            answer = parse_answer(conn.buffer, eof)
        except TimeoutError:  # nothing yet after all (part of a TLS record)
            return
        except (http.client.HTTPException, OSError, ValueError) as exc:
            self._broken(slot, exc)
            return
        if answer is None:
            return
        steps, call = slot.steps, slot.call
        if steps is None or call is None:  # an idle connection the server closed
            self._drop(slot)
            return
        slot.steps = slot.call = slot.out = None
        slot.reused = True
        self.busy.discard(slot)
        if answer.close:
            self._drop(slot)
        else:
            self.free.append(slot)
        if not 200 <= answer.status < 300:
            self.fallback(steps, call, answer)
        elif (then := advance(steps, call.result(answer))) is None:
            self.tick()
        elif not self.api.stop.is_set():
            self.ready.append((steps, then))

    def _broken(self, slot: _Slot, exc: Exception) -> None:
        steps, call = slot.steps, slot.call
        self._drop(slot)
        if steps is None or call is None:
            return
        if slot.reused and isinstance(exc, STALE):
            # Closed by the server while idle: sent again at once, on a new connection.
            self.fallback(steps, call, None)
        else:
            self.fallback(steps, call, self.api.failure(exc))
