"""``inv run`` (unless ``--no-live``): deliver to ReportPortal while pytest runs.

The pytest plugin writes the journal a line per event as it happens. For each enabled
instance a thread of the ``inv run`` process tails that file and feeds each event to the
``LaunchBuilder`` and the ``Delivery`` of the post-run delivery: the launch starts with
the session, a test's suites and the test itself (started and finished) go out as soon
as its line is written, and log batches as soon as they are full. The same thread sends
them, over the connections of a ``Multiplexer``, between its reads of the journal. Every
step done is recorded in the instance's outbox entry, under the entry's lock, exactly as
a delivery records it.

The session's end (its last journal line) closes the suites: no suite can get another
test (xdist, reruns) after it. The stream then sends the last log batch and finishes
each suite once its children are finished, while pytest is still writing its coverage
report and exiting, a few tenths of a second. When pytest exits, the stream reads the
journal to its end without sending, lets the requests in flight finish, and hands the
launch it built to the post-run delivery, which finds in the entry what went out live
and sends only the rest: whatever was still queued, and the launch finish, which adds
the coverage attributes the live start could not know.

ReportPortal trouble never reaches the tests, which run in another process: the first
request that fails for good stops that instance's stream, and the post-run delivery (and
``inv sync`` after it) takes over from the last saved step. A failure retrying will not
mend (a rejected key) goes straight to the outbox instead: the server is not asked again
within the same run. A runner killed mid-run leaves the entry in the outbox:
``inv runs.ingest`` and ``inv sync`` complete the launch.
"""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from testviper.config import Instance, Settings
from testviper.reporter import outbox
from testviper.reporter.api import Api, DeliveryError
from testviper.reporter.deliver import (
    LIVE_START,
    WORKERS,
    Delivery,
    Handover,
    LogBatcher,
    launch_attributes,
)
from testviper.reporter.launch import Launch, LaunchBuilder, derived_uuid
from testviper.reporter.masking import Masker, masker_for
from testviper.reporter.multiplex import Multiplexer, Steps
from testviper.runner.journal import parse_event

POLL = 0.05  # seconds between looks at a journal that has not grown
GRACE = 5.0  # seconds a stopping stream lets requests in flight finish
STALL = 1.0  # ... unless this long passes without an answer: the server is in trouble
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
        self.error: DeliveryError | None = None  # the failure for good that stopped it
        self._read_whole = False
        self.mux: Multiplexer | None = None  # while streaming

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
        self.mux = mux = delivery.multiplexer()
        sender = _Sender(delivery, mux)
        sending = True
        try:
            for event in self._tail(sender.turn):
                # Every event goes into the launch, sent or not: it is handed over whole.
                items = builder.add(event)
                # A request that failed for good, or pytest's exit: the post-run delivery
                # sends the rest.
                sending = sending and not api.stop.is_set() and not self.finishing.is_set()
                if not sending:
                    continue
                kind = event.get("event")
                if kind == "session_start":
                    sender.start_launch()
                elif kind == "session_finish":
                    sender.finish_suites(builder.launch)
                    sending = (
                        False  # nothing comes after it; if it did, the post-run delivery sends it
                    )
                else:
                    sender.items(items)
            if self._read_whole:
                self.launch = builder.launch
            # What is not sent yet is left to the post-run delivery, which sends it
            # faster; what is in flight may finish, for a while.
            sender.waiting.clear()
            mux.pending.clear()
            grace = time.monotonic() + GRACE
            while not mux.idle and (left := grace - time.monotonic()) > 0:
                waited = time.monotonic()
                mux.turn(min(left, STALL))
                if time.monotonic() - waited >= STALL:
                    break  # no answer for a second: the post-run delivery resends them
            # Tasks in trouble (an error answer, a server down) stop at their next retry:
            # the post-run delivery retries them at once, rather than after this backoff.
            api.stop.set()
            wait(delivery.handed, timeout=max(0.0, grace - time.monotonic()))
            if delivery.error is not None and delivery.error.permanent:
                self.error = delivery.error
        finally:
            api.stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            mux.close()
            delivery.save()
            self.closed = True
            api.close()

    def _tail(self, wait: Callable[[float], None]) -> Iterator[dict[str, Any]]:
        """The journal's events as pytest writes them, to its end once pytest has exited.
        ``wait(seconds)`` runs between reads: the requests go on meanwhile."""
        while not self.journal.exists():
            if self.finishing.is_set():
                return
            wait(POLL)
        rest = b""
        with self.journal.open("rb") as handle:
            while True:
                # Looked at before reading: all pytest wrote before exiting is in the file.
                exited = self.finishing.is_set()
                chunk = handle.read(1 << 16)
                if not chunk:
                    if exited:
                        break
                    wait(POLL)
                    continue
                if not exited:
                    wait(0)
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    if (event := parse_event(line)) is not None:
                        yield event
        if (event := parse_event(rest)) is not None:  # a last line without its newline
            yield event
        self._read_whole = True


class _Sender:
    """Queues a live launch's tasks, each once the items it depends on are started: a
    test's after its suite's, a log batch's after its items', all after the launch's."""

    def __init__(self, delivery: Delivery, mux: Multiplexer) -> None:
        self.delivery, self.mux = delivery, mux
        # A step not done yet -> the tasks waiting for it, each with the rest it needs.
        self.waiting: dict[str, list[tuple[list[str], Steps]]] = {}
        self.batcher = LogBatcher()

    def turn(self, seconds: float) -> None:
        """Queue the tasks whose steps are now done, then let the requests go on."""
        done = self.delivery.done
        for step in [step for step in self.waiting if done(step)]:
            for needs, steps in self.waiting.pop(step):
                self._queue(needs, steps)
        self.mux.turn(seconds)

    def start_launch(self) -> None:
        delivery = self.delivery

        def steps() -> Steps:
            yield delivery.launch_start()
            with delivery.lock:
                delivery.entry.done |= {"launch:start", LIVE_START}
            delivery.save()

        if not delivery.done("launch:start"):
            self._queue([], steps())

    def items(self, items: list[Any]) -> None:
        for item in items:
            parent = f"{item.parent_uuid}:start" if item.parent_uuid else "launch:start"
            self._queue([parent], self.delivery.item_steps(item))
            for log in item.logs:
                if closed := self.batcher.add(log):
                    self._logs(*closed)

    def finish_suites(self, launch: Launch) -> None:
        """The session is over: send the last log batch, and each suite's finish once
        its children are finished (ReportPortal refuses a parent finished first)."""
        if closed := self.batcher.flush():
            self._logs(*closed)
        children: dict[str, list[str]] = {}
        for item in launch.items:
            if item.parent_uuid:
                children.setdefault(item.parent_uuid, []).append(f"{item.uuid}:finish")
        for item in launch.items:
            if item.type != "STEP" and not self.delivery.done(f"{item.uuid}:finish"):
                needs = [f"{item.uuid}:start", *children.get(item.uuid, [])]
                self._queue(needs, self.delivery.finish_steps(item))

    def _logs(self, batch_id: str, batch: list[Any]) -> None:
        if self.delivery.done(batch_id):
            return
        # v1 would file a log of an item not started yet under the launch: wait for them.
        needs = sorted({f"{log.item_uuid}:start" for log in batch if log.item_uuid})
        self._queue(["launch:start", *needs], self.delivery.log_steps(batch_id, batch))

    def _queue(self, needs: list[str], steps: Steps) -> None:
        done = self.delivery.done
        missing = [step for step in needs if not done(step)]
        if missing:
            self.waiting.setdefault(missing[0], []).append((missing[1:], steps))
        else:
            self.mux.add(steps)


def start(settings: Settings, run_dir: Path, run_id: str) -> Callable[[], dict[str, Handover]]:
    """Stream the run to every enabled instance; returns the function that stops it.

    Call the returned function once pytest has exited, before the post-run delivery, and
    give that delivery the handovers it returns.
    """
    streams = [Stream(settings, inst, run_dir, run_id) for inst in settings.enabled_instances]
    for stream in streams:
        stream.start()

    def stop() -> dict[str, Handover]:
        """Stop streaming; what each finished stream leaves, by instance name."""
        for stream in streams:
            stream.finishing.set()
            if stream.mux is not None:
                stream.mux.wake()
        deadline = time.monotonic() + GRACE + 5
        for stream in streams:
            stream.join(max(0.0, deadline - time.monotonic()))
        return {s.instance.name: Handover(s.launch, s.error) for s in streams if not s.is_alive()}

    return stop
