"""``inv profile``: ``inv run`` under psutil sampling of the pytest process tree.

The run itself is ``testviper.runner.run.run``; this module only passes it a watcher
(``Sampler``) that polls the tree from a daemon thread while pytest runs, then stores
the figures in the ``profiles`` table next to the run and compares them with the
previous profile of the same target.
"""

import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psutil
import sqlalchemy as sa

from testviper.history import schema
from testviper.history.store import History

INTERVAL = 0.2  # seconds between samples; one sample costs a /proc scan (~1-3 ms)


@dataclass
class Profile:
    target: str
    wall: float
    peak_rss: int | None = None
    cpu_mean: float | None = None
    cpu_peak: float | None = None
    children: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    run_id: str | None = None
    created_at: datetime | None = None


def target_of(args: Sequence[str]) -> str:
    """What identifies a profiled target: the pytest arguments, joined as typed."""
    return shlex.join(args)


def _hwm(proc: psutil.Process) -> int:
    """Peak RSS of one process since it started (Linux VmHWM), 0 where unknown."""
    try:
        with open(f"/proc/{proc.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class Sampler:
    """Polls a process and its descendants until stopped; usable as a ``run`` watcher."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}
        self._io: dict[int, tuple[int, int]] = {}  # last counters seen per pid
        self._hwm: dict[int, int] = {}
        self.peak_rss = 0
        self.cpu: list[float] = []
        self.children = 0
        self.io_available = False
        self.started = self.stopped = 0.0

    def __call__(self, proc: subprocess.Popen[bytes]) -> Any:
        self.started = time.monotonic()
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            root = None
        if root is not None:
            self._thread = threading.Thread(target=self._loop, args=(root,), daemon=True)
            self._thread.start()
        return self.stop

    def stop(self) -> None:
        self.stopped = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, root: psutil.Process) -> None:
        while True:
            self.sample(root)
            if self._stop.wait(self.interval):
                return

    def sample(self, root: psutil.Process) -> None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        self.children = max(self.children, len(tree) - 1)
        rss = 0
        cpu = 0.0
        for p in tree:
            # Cached objects: cpu_percent() measures since the previous call on the object.
            known = self._procs.setdefault(p.pid, p)
            try:
                with known.oneshot():
                    rss += known.memory_info().rss
                    cpu += known.cpu_percent(None)
                    io = known.io_counters() if hasattr(known, "io_counters") else None
            except psutil.AccessDenied:
                continue
            except psutil.Error:  # exited between the scan and now
                continue
            if io is not None:
                self.io_available = True
                self._io[p.pid] = (io.read_bytes, io.write_bytes)
            self._hwm[p.pid] = _hwm(known)
        self.peak_rss = max(self.peak_rss, rss, *self._hwm.values(), 0)
        self.cpu.append(cpu)

    def profile(self, target: str) -> Profile:
        # The first cpu_percent() of a process is 0 by definition: not a measurement.
        cpu = self.cpu[1:] or self.cpu
        return Profile(
            target=target,
            wall=round((self.stopped or time.monotonic()) - self.started, 3),
            peak_rss=self.peak_rss or None,
            cpu_mean=round(sum(cpu) / len(cpu), 1) if cpu else None,
            cpu_peak=round(max(cpu), 1) if cpu else None,
            children=self.children,
            read_bytes=sum(r for r, _ in self._io.values()) if self.io_available else None,
            write_bytes=sum(w for _, w in self._io.values()) if self.io_available else None,
        )


def previous(history: History, target: str, before_id: int | None = None) -> Profile | None:
    """The latest stored profile of ``target`` (older than row ``before_id`` if given)."""
    t = schema.profiles
    query = sa.select(t).where(t.c.target == target).order_by(t.c.id.desc()).limit(1)
    if before_id is not None:
        query = query.where(t.c.id < before_id)
    with history.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None:
        return None
    return Profile(**{k: v for k, v in row.items() if k != "id"})


def save(history: History, profile: Profile) -> int:
    profile.created_at = profile.created_at or datetime.now(UTC).replace(tzinfo=None)
    with history.begin() as conn:
        result = conn.execute(schema.profiles.insert(), asdict(profile))
    return int(result.inserted_primary_key[0])


def growth(new: float | None, old: float | None) -> float | None:
    """Percent change from ``old`` to ``new``; None when either is unknown or old is 0."""
    if new is None or old is None or old == 0:
        return None
    return (new - old) / old * 100


def warnings(new: Profile, old: Profile | None, rss_limit: float, wall_limit: float) -> list[str]:
    """One line per figure that grew beyond its limit (percent) since ``old``."""
    if old is None:
        return []
    out = []
    rss = growth(new.peak_rss, old.peak_rss)
    if rss is not None and rss > rss_limit:
        out.append(
            f"peak RSS grew {rss:.0f}% ({_mb(old.peak_rss)} -> {_mb(new.peak_rss)}), "
            f"more than --limit-rss-growth {rss_limit:g}%"
        )
    wall = growth(new.wall, old.wall)
    if wall is not None and wall > wall_limit:
        out.append(
            f"wall time grew {wall:.0f}% ({old.wall:.2f}s -> {new.wall:.2f}s), "
            f"more than --limit-wall-growth {wall_limit:g}%"
        )
    return out


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024 / 1024:.1f} MB"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def _int(v: int | None) -> str:
    return "-" if v is None else str(v)


def format_profile(new: Profile, old: Profile | None) -> str:
    """The profile beside the previous one of the same target, with the change."""
    rows: list[tuple[str, str, str, str]] = [("", "this run", "previous", "change")]

    def add(name: str, fmt: Any, attr: str) -> None:
        a, b = getattr(new, attr), getattr(old, attr) if old else None
        g = growth(a, b)
        rows.append((name, fmt(a), fmt(b) if old else "-", "-" if g is None else f"{g:+.0f}%"))

    add("wall", lambda v: "-" if v is None else f"{v:.2f}s", "wall")
    add("peak RSS", _mb, "peak_rss")
    add("CPU mean", _pct, "cpu_mean")
    add("CPU peak", _pct, "cpu_peak")
    add("children", _int, "children")
    add("read", _mb, "read_bytes")
    add("written", _mb, "write_bytes")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = f"profile of {new.target or '(default test paths)'}"
    if old is not None and old.created_at is not None:
        head += f" (previous: {old.created_at:%Y-%m-%d %H:%M} UTC, run {old.run_id or '-'})"
    else:
        head += " (no previous profile of this target)"
    lines = [head]
    for r in rows:
        lines.append(
            "  "
            + r[0].ljust(widths[0])
            + "  "
            + "  ".join(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))
        )
    return "\n".join(lines)
