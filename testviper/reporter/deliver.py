"""Deliver one run to one ReportPortal instance, resumably, without duplicates.

The launch is built from the run's journal (``launch.build_launch``): every launch, item
and log has a UUID derived from the run, the instance and its place in the tree, so the
whole launch is known before the first request and any request can be sent again.

Order: start the launch, start items level by level (every item whose parent exists,
concurrently; a test is started and finished in the same task), send the logs in
multipart batches, finish suites deepest first, finish the launch last. A parent is
never finished before its children, the launch never before its items.

Requests go to the v1 API (``api.Api``: connections, retries, the deadline). The many
item and log requests of a level go out over a few kept-alive connections at once from
one thread (``multiplex.Multiplexer``); a request that does not simply succeed is handed,
with its answer, to a worker thread that retries and judges it as ``Api.perform`` does.

Progress (the steps done) is kept in the instance's outbox file, so what is not
delivered now is completed by ``inv sync`` later, from where it stopped.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testviper.config import Instance, Settings, warn_insecure
from testviper.reporter import outbox
from testviper.reporter.api import (
    BOUNDARY,
    Api,
    Call,
    DeliveryError,
    Response,
)
from testviper.reporter.launch import Item, Launch, Log, attribute, build_launch
from testviper.reporter.masking import Masker, masker_for
from testviper.reporter.multiplex import Multiplexer, Steps, advance
from testviper.runner.journal import iter_events

WORKERS = 16  # threads that retry what a Multiplexer hands over (see multiplex.py)
# Requests in flight per instance: on a 2-core machine with the test server, a 10,000-test
# sync took 5.6 s with 16, 4.4 s with 32, 4.3 s with 48 and 4.6 s with 64.
CONNECTIONS = 48
LOG_BATCH = 50  # entries per multipart request
LOG_BATCH_BYTES = 4 * 1024 * 1024  # far below RP's 64/128 MB and common proxy limits
SAVE_EVERY = 1.0  # seconds between outbox writes while a level is in progress
# Outbox step: the live stream started the launch, without the coverage attributes.
LIVE_START = "launch:live"


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


@dataclass
class Handover:
    """What an instance's live stream leaves to the post-run delivery of the same run."""

    launch: Launch | None = None  # built from the whole journal, when the stream read it all
    # A failure for good (a rejected key): the run goes to the outbox with it, untried
    # again until `inv sync`, so the server sees one rejected request per run, not two.
    error: DeliveryError | None = None


def iso(ts: float) -> str:
    """An epoch float as ISO-8601 with offset and microseconds (RP >= 5.13.2 keeps them)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def default_deadline(instance: Instance) -> float:
    return max(300.0, 4 * instance.timeout * (instance.retries + 1))


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
        self.pool: ThreadPoolExecutor  # set by whoever runs the delivery
        self.handed: list[Future[None]] = []  # tasks on the pool's threads (``fallback``)

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
                    self.item_steps(item)
                    for item in level
                    if not self.done(f"{item.uuid}:start")
                    or (item.type == "STEP" and not self.done(f"{item.uuid}:finish"))
                )
            self.parallel(
                self.log_steps(batch_id, batch)
                for batch_id, batch in _batches(launch.items)
                if not self.done(batch_id)
            )
            for level in reversed(levels):
                self.parallel(
                    self.finish_steps(item)
                    for item in level
                    if item.type != "STEP" and not self.done(f"{item.uuid}:finish")
                )
            if not self.done("launch:finish"):
                self.finish_launch()
                self.mark("launch:finish")

    def parallel(self, tasks: Iterable[Steps]) -> None:
        """Run ``tasks`` concurrently; on the first failure stop the rest and raise it."""
        tasks = list(tasks)
        if not tasks:  # a level all done (by the live stream, or an earlier attempt)
            return
        self.multiplexer().run(tasks)
        for future in self.handed:
            future.result()
        self.handed.clear()
        self.save()
        if self.error is not None:
            raise self.error

    def multiplexer(self) -> Multiplexer:
        """Connections for this delivery's requests; what they cannot finish goes to
        ``fallback``."""
        return Multiplexer(self.api, CONNECTIONS, WORKERS, self.fallback, self.maybe_save)

    def fallback(
        self, steps: Steps, call: Call, first: Response | Exception | None
    ) -> Future[None]:
        """Go on with a task on a worker thread (``drive``); ``handed`` keeps its future."""
        future = self.pool.submit(self.guard, lambda: self.drive(steps, call, first))
        self.handed.append(future)
        return future

    def drive(
        self, steps: Steps, call: Call | None = None, first: Response | Exception | None = None
    ) -> None:
        """Run (the rest of) a task on this thread, each request through ``Api.perform``:
        ``call`` is the request it is at, ``first`` what became of it so far."""
        if call is None:
            call = advance(steps, None)
        while call is not None and not self.api.stop.is_set():
            call = advance(steps, self.api.perform(call, first))
            first = None
        steps.close()
        self.maybe_save()

    def maybe_save(self) -> None:
        now = time.monotonic()
        with self.lock:  # several threads call this: one of them saves
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
        if self.launch.status:
            body["status"] = self.launch.status
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
        self.api.perform(self.launch_start())

    def launch_start(self) -> Call:
        launch = self.launch
        body = {
            "name": self.mask(launch.name)[:256] or "TestViper",
            "startTime": iso(launch.start),
            "description": self.mask(launch.description),
            "attributes": self.mask.attributes(launch.attributes)[:256],
            "mode": "DEFAULT",
            "uuid": launch.uuid,
        }
        exists = f"/launch/uuid/{launch.uuid}"
        return Call("POST", "/launch", "the launch start", body, exists=exists)

    def item_steps(self, item: Item) -> Steps:
        """Start an item; finish it at once if it is a test."""
        if not self.done(f"{item.uuid}:start"):
            yield self.start_item(item)
            self.mark(f"{item.uuid}:start")
        if item.type == "STEP":
            yield from self.finish_steps(item)

    def finish_steps(self, item: Item) -> Steps:
        yield self.finish_item(item)
        self.mark(f"{item.uuid}:finish")

    def start_item(self, item: Item) -> Call:
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
        what = f"the start of '{item.name}'"
        return Call("POST", path, what, body, exists=f"/item/uuid/{item.uuid}", answer=False)

    def finish_item(self, item: Item) -> Call:
        body: dict[str, Any] = {"endTime": iso(item.end), "launchUuid": self.launch.uuid}
        if item.status:
            body["status"] = item.status
        if item.issue:
            body["issue"] = item.issue
        what = f"the finish of '{item.name}'"
        return Call("PUT", f"/item/{item.uuid}", what, body, answer=False)

    def log_steps(self, batch_id: str, batch: list[Log]) -> Steps:
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
        data = yield Call("POST", "/log", f"{len(batch)} logs", multipart=body)
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
    handover: Handover | None = None,
) -> DeliveryResult:
    """Deliver (or resume delivering) one run to one instance; never raises for RP trouble.

    Whatever is not delivered stays in the outbox with the reason; history's
    ``deliveries`` row mirrors the outcome. An entry another process is delivering right
    now (``inv run`` while ``inv sync`` runs) is left to it. ``handover``: what the live
    stream of this run left for this instance.
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
        return _deliver(
            settings, instance, run_id, run_dir, history, masker, deadline, handover or Handover()
        )


def _deliver(
    settings: Settings,
    instance: Instance,
    run_id: str,
    run_dir: Path,
    history: Any,
    masker: Masker | None,
    deadline: float | None,
    handover: Handover,
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
        if handover.error is not None:
            raise handover.error
        attributes = launch_attributes(settings, instance, run_id, Path(run_dir), history)
        launch = handover.launch
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
    handovers: dict[str, Handover] | None = None,
    **kwargs: Any,
) -> list[DeliveryResult]:
    """Deliver a run to every enabled instance (or the ones given), one thread each.

    ``handovers``: what the live streams left, by instance name."""
    from testviper.runner.run import connect

    targets = [i for i in instances if i.enabled] if instances else settings.enabled_instances
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
                handover=(handovers or {}).get(inst.name),
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
