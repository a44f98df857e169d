"""``inv run --live``: deliver to ReportPortal while pytest runs.

The pytest plugin writes the journal a line per event as it happens. For each enabled
instance a thread of the ``inv run`` process tails that file and feeds each event to the
``LaunchBuilder`` and the ``Delivery`` of the post-run delivery: the launch starts with
the session, a test's suites and the test itself (started and finished) go out as soon
as its line is written, and log batches as soon as they are full. Every step done is
recorded in the instance's outbox entry, under the entry's lock, exactly as a delivery
records it.

When pytest exits, the stream stops and the normal post-run delivery follows. It
rebuilds the launch from the journal (the source of truth), finds in the entry what went
out live and sends only the rest: the tests still in flight, the last log batch, the
suite finishes (a suite could still get a test until the session ends: xdist, reruns),
and the launch finish, which adds the coverage attributes the live start could not know.

ReportPortal trouble never reaches the tests, which run in another process: the first
request that fails for good stops that instance's stream, and the post-run delivery (and
``inv sync`` after it) takes over from the last saved step. A runner killed mid-run
leaves the entry in the outbox: ``inv runs.ingest`` and ``inv sync`` complete the launch.
"""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from testviper.config import Instance, Settings
from testviper.reporter import outbox
from testviper.reporter.api import Api
from testviper.reporter.deliver import (
    LIVE_START,
    WORKERS,
    Delivery,
    LogBatcher,
    launch_attributes,
)
from testviper.reporter.launch import Launch, LaunchBuilder, derived_uuid
from testviper.reporter.masking import Masker, masker_for
from testviper.runner.journal import parse_event

POLL = 0.05  # seconds between looks at a journal that has not grown
GRACE = 5.0  # seconds a stopping stream lets requests in flight finish
# Per request the instance's timeout and retries still apply; a stream has no overall
# deadline of its own since a suite may run for hours, and stopping it is always safe.
NO_DEADLINE = 7 * 24 * 3600.0


class Stream(threading.Thread):
    """One instance's live delivery of one run."""

    def __init__(self, settings: Settings, instance: Instance, run_dir: Path, run_id: str) -> None:
        super().__init__(name=f"tv-live-{instance.name}", daemon=True)
        from testviper.runner.run import JOURNAL

        self.settings, self.instance, self.run_dir = settings, instance, run_dir
        self.journal = run_dir / JOURNAL
        self.run_id = run_id
        self.masker: Masker = masker_for(settings)
        self.finishing = threading.Event()  # pytest has exited
        self.closed = False  # handed over: nothing may write the entry any more
        # The launch built from every line of the journal, once pytest has exited: the
        # post-run delivery takes it instead of reading the journal again.
        self.launch: Launch | None = None
        self._read_whole = False

    def run(self) -> None:
        state = self.settings.state_dir
        with outbox.entry_lock(state, self.instance.name, self.run_id) as mine:
            if mine:  # else an `inv sync` has it: the post-run delivery will see
                self._stream()

    def _stream(self) -> None:
        state, name = self.settings.state_dir, self.instance.name
        key = self.settings.secret(self.instance.api_key_env)
        if not key:
            return  # `inv run` refuses to start without it; nothing to stream with
        entry = outbox.Entry(self.run_id, name, derived_uuid(self.run_id, name, "launch"))
        # Attributes known before the tests end; coverage comes with the launch finish.
        attributes = launch_attributes(
            self.settings, self.instance, self.run_id, self.run_dir, None
        )
        builder = LaunchBuilder(
            self.run_id,
            name,
            self.instance.launch.name or self.settings.project_name,
            description=self.instance.launch.description,
            attributes=attributes,
        )

        def save(snapshot: outbox.Entry) -> None:
            if not self.closed:
                outbox.save_entry(state, snapshot)

        api = Api(self.instance, key, NO_DEADLINE, self.masker)
        delivery = Delivery(api, builder.launch, entry, self.masker, save)
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"tv-live-{name}")
        delivery.pool = pool
        sender = _Sender(delivery, pool, self.finishing)
        sending = True
        try:
            for event in self._tail():
                # Every event goes into the launch, sent or not: it is handed over whole.
                items = builder.add(event)
                # A request that failed for good, or pytest's exit: the post-run delivery
                # sends the rest.
                sending = sending and not api.stop.is_set() and not self.finishing.is_set()
                if not sending:
                    continue
                try:
                    if event.get("event") == "session_start":
                        sender.start_launch()
                    elif sender.launch is not None:
                        sender.items(items)
                except _HandedOver:
                    sending = False
                delivery.maybe_save()
            if self._read_whole:
                self.launch = builder.launch
        finally:
            # What is queued is left to the post-run delivery, which sends it faster;
            # what is in flight may finish, for a while.
            pool.shutdown(wait=False, cancel_futures=True)
            wait(sender.window, timeout=GRACE)
            api.stop.set()
            delivery.save()
            self.closed = True
            api.close()

    def _tail(self) -> Iterator[dict[str, Any]]:
        """The journal's events as pytest writes them, to its end once pytest has exited."""
        while not self.journal.exists():
            if self.finishing.wait(POLL):
                return
        rest = b""
        with self.journal.open("rb") as handle:
            while True:
                # Looked at before reading: all pytest wrote before exiting is in the file.
                exited = self.finishing.is_set()
                chunk = handle.read(1 << 16)
                if not chunk:
                    if exited:
                        break
                    self.finishing.wait(POLL)
                    continue
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if (event := parse_event(line)) is not None:
                        yield event
        if (event := parse_event(rest)) is not None:  # a last line without its newline
            yield event
        self._read_whole = True


class _HandedOver(Exception):
    """pytest has exited while the stream waited for the server: stop streaming."""


class _Sender:
    """Submits a live launch's requests to the pool, each after the ones it depends on.

    Tasks are queued in order and the pool takes them in order, so a task only ever
    waits for tasks already running or done: no deadlock, whatever the pool size.
    """

    def __init__(
        self, delivery: Delivery, pool: ThreadPoolExecutor, finishing: threading.Event
    ) -> None:
        self.delivery, self.pool, self.finishing = delivery, pool, finishing
        self.launch: Future[None] | None = None
        self.started: dict[str, Future[None]] = {}  # item uuid -> its start task
        self.window: set[Future[None]] = set()
        self.batcher = LogBatcher()

    def start_launch(self) -> None:
        delivery = self.delivery

        def task() -> None:
            if not delivery.done("launch:start"):
                delivery.start_launch()
                with delivery.lock:
                    delivery.entry.done |= {"launch:start", LIVE_START}
                delivery.save()

        self.launch = self._submit([], task)

    def items(self, items: list[Any]) -> None:
        delivery = self.delivery
        for item in items:
            parent = self.started.get(item.parent_uuid or "") or self.launch
            self.started[item.uuid] = self._submit([parent], delivery.item_task(item))
            for log in item.logs:
                if closed := self.batcher.add(log):
                    self._logs(*closed)
        if len(self.started) > 4 * WORKERS:  # only tasks still running need waiting for
            self.started = {u: f for u, f in self.started.items() if not f.done()}

    def _logs(self, batch_id: str, batch: list[Any]) -> None:
        if self.delivery.done(batch_id):
            return
        # v1 would file a log of an item not started yet under the launch: wait for them.
        items = {log.item_uuid for log in batch}
        self._submit([self.started.get(u) for u in items], self.delivery.log_task(batch_id, batch))

    def _submit(self, after: list[Future[None] | None], task: Callable[[], None]) -> Future[None]:
        delivery = self.delivery

        def run() -> None:
            for future in after:
                if future is not None:
                    future.result()
            if not delivery.api.stop.is_set():  # something it depends on failed
                task()

        # The journal is read faster than a server answers: bound what is queued.
        while len(self.window) >= 4 * WORKERS:
            if self.finishing.is_set():
                raise _HandedOver
            _, self.window = wait(self.window, timeout=POLL, return_when=FIRST_COMPLETED)
        future = self.pool.submit(delivery.guard, run)
        self.window.add(future)
        return future


def start(settings: Settings, run_dir: Path, run_id: str) -> Callable[[], dict[str, Launch]]:
    """Stream the run to every enabled instance; returns the function that stops it.

    Call the returned function once pytest has exited, before the post-run delivery, and
    give that delivery the launches it returns.
    """
    streams = [
        Stream(settings, inst, run_dir, run_id)
        for inst in settings.config.reportportal.instances
        if inst.enabled
    ]
    for stream in streams:
        stream.start()

    def stop() -> dict[str, Launch]:
        """Stop streaming; the launches each stream built whole, by instance name."""
        for stream in streams:
            stream.finishing.set()
        deadline = time.monotonic() + GRACE + 5
        for stream in streams:
            stream.join(max(0.0, deadline - time.monotonic()))
        return {
            s.instance.name: s.launch for s in streams if s.launch is not None and not s.is_alive()
        }

    return stop
