"""``inv backup``: one verified tar.gz of the config, the history and recent reports.

An archive holds, under fixed member names:

- ``root/<config file>``, ``root/ops/schedules.yaml`` and, only on request,
  ``root/.env`` (paths relative to the project root, the config file's directory);
- ``state/history.sqlite``: a consistent snapshot taken with SQLite's online backup API
  (one read transaction, so a run being written meanwhile is either wholly in it or
  not at all), switched to a single-file journal mode;
- ``state/reports/...``: reports modified in the last ``retention.backup_reports_days``;
- ``MANIFEST.json``, written last: format version, creation time, host, TestViper
  version and every member's kind, size, mode and SHA-256.

The archive is written to a hidden temp file in the destination, fsynced, and
published under a name that is never reused (a hard link fails rather than replace an
existing archive). Archives are always mode 0600: the history can hold captured logs.

``read_archive`` is the one reader: ``backup.verify`` and ``restore`` both use it. It
streams the archive once, accepts only regular files whose names are listed in the
manifest, stages their content under names of its own choosing (never the member's
name), and checks sizes and checksums; nothing is ever extracted with tarfile.
"""

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from testviper import __version__
from testviper.config import Settings
from testviper.errors import UserError
from testviper.fsutil import fsync_dir

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
MANIFEST_MAX = 16 * 1024 * 1024
BACKUP_PREFIX = "testviper-backup"
SAFETY_PREFIX = "testviper-safety"
NAME = re.compile(
    r"^(?P<prefix>testviper-(?:backup|safety))-(?P<ts>\d{8}T\d{6}\.\d{6}Z)(?:-\d+)?\.tar\.gz$"
)
TS_FORMAT = "%Y%m%dT%H%M%S.%fZ"
KINDS = {
    # kind -> the --only part it belongs to
    "config": "config",
    "schedules": "config",
    "secrets": "config",
    "history": "history",
    "reports": "reports",
}
PARTS = ("config", "history", "reports")
HISTORY_MEMBER = "state/history.sqlite"
SCHEDULES = "ops/schedules.yaml"
CHUNK = 1024 * 1024


@dataclass
class Item:
    """A file to put in an archive: its member name, kind and where to read it."""

    name: str
    kind: str
    source: Path


@dataclass
class Member:
    """One manifest entry."""

    name: str
    kind: str
    size: int
    sha256: str
    mode: int = 0o644

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "sha256": self.sha256,
            "mode": self.mode,
        }


@dataclass
class Created:
    path: Path
    members: list[Member]
    size: int
    secrets: bool


@dataclass
class BackupInfo:
    path: Path
    created: datetime
    prefix: str
    size: int


@dataclass
class Verified:
    """An archive that passed every check; its members staged in ``staging``."""

    path: Path
    manifest: dict[str, Any]
    members: dict[str, Member]
    staged: dict[str, Path]
    staging: Path
    last_run: str | None = None
    runs: int | None = None

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass
class Policy:
    """Retention in restic's ``forget`` terms; 0 means the rule is off, -1 unlimited."""

    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def empty(self) -> bool:
        return not (self.daily or self.weekly or self.monthly)


# -- what to back up ----------------------------------------------------------------


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for any other database."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise UserError(f"history.url: '{url}' is an in-memory database; nothing to back up")
    return Path(parsed.database)


def _regular_files(top: Path) -> Iterator[Path]:
    """Regular files under ``top``, never following or yielding symlinks."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d).is_symlink())
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not path.is_symlink() and path.is_file():
                yield path


def collect(
    settings: Settings,
    include_secrets: bool = False,
    reports_days: int | None = None,
    history: bool = True,
    now: datetime | None = None,
) -> list[Item]:
    """The files of a backup of ``settings``' project, history snapshot last."""
    items = []
    root, state = settings.root, settings.state_dir
    if settings.path is not None and settings.path.is_file():
        items.append(Item(f"root/{settings.path.name}", "config", settings.path))
    if (root / SCHEDULES).is_file():
        items.append(Item(f"root/{SCHEDULES}", "schedules", root / SCHEDULES))
    if include_secrets and (root / ".env").is_file():
        items.append(Item("root/.env", "secrets", root / ".env"))
    days = settings.config.retention.backup_reports_days if reports_days is None else reports_days
    if days > 0 and (state / "reports").is_dir():
        cutoff = (now or datetime.now(UTC)).timestamp() - days * 86400
        for path in _regular_files(state / "reports"):
            if path.stat().st_mtime >= cutoff:
                rel = path.relative_to(state).as_posix()
                items.append(Item(f"state/{rel}", "reports", path))
    if history:
        db = sqlite_path(settings.history_url)
        if db is None:
            raise UserError(
                "history.url points at a server database: backing it up is not supported "
                "yet; use pg_dump for the database and `inv backup --no-history` for the rest"
            )
        if db.is_file():
            items.append(Item(HISTORY_MEMBER, "history", db))
    return items


# -- writing --------------------------------------------------------------------------


class _Hashing:
    """A read-only file wrapper that hashes and counts what is read through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data


def snapshot_sqlite(db: Path, dest: Path, busy_timeout: float = 10.0) -> None:
    """Copy the live database ``db`` to ``dest`` with SQLite's online backup API.

    One step (pages=-1) holds one read transaction: the copy is a single consistent
    state even while another process writes. The copy is switched to the rollback
    journal so it is one self-contained file.
    """
    try:
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=busy_timeout)
        try:
            dst = sqlite3.connect(dest)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise UserError(
            f"{dest.parent}: cannot snapshot the history database {db} here ({exc}); "
            "is the destination full or not writable?"
        ) from None


def _archive_name(prefix: str, now: datetime) -> str:
    return f"{prefix}-{now.strftime(TS_FORMAT)}.tar.gz"


def _publish(tmp: Path, dest: Path, name: str) -> Path:
    """Give ``tmp`` its final name without ever replacing an existing archive."""
    stem = name.removesuffix(".tar.gz")
    for n in range(1000):
        final = dest / (name if n == 0 else f"{stem}-{n}.tar.gz")
        try:
            os.link(tmp, final)
        except FileExistsError:
            continue
        except OSError:
            # A filesystem without hard links: a checked rename (the name has microseconds).
            if final.exists():
                continue
            os.rename(tmp, final)
            fsync_dir(dest)
            return final
        tmp.unlink()
        fsync_dir(dest)
        return final
    raise UserError(f"{dest}: cannot find a free archive name for {name}")


def _writable_dir(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{dest}: cannot create the backup destination ({exc.strerror}); "
            "give a writable directory with --dest"
        ) from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise UserError(f"{dest}: the backup destination is not writable; use --dest")


def write_archive(
    items: Sequence[Item],
    dest: Path,
    prefix: str = BACKUP_PREFIX,
    meta: dict[str, Any] | None = None,
    busy_timeout: float = 10.0,
    now: datetime | None = None,
) -> Created:
    """Write ``items`` and their manifest to a new archive in ``dest``."""
    now = now or datetime.now(UTC)
    _writable_dir(dest)
    name = _archive_name(prefix, now)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=dest))
    tmp = work / "archive"
    members: list[Member] = []
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
                for item in items:
                    source = item.source
                    if item.kind == "history":
                        source = work / "history.sqlite"
                        snapshot_sqlite(item.source, source, busy_timeout)
                    members.append(_add(tar, item, source))
                manifest = {
                    "format_version": FORMAT_VERSION,
                    "created_at": now.isoformat(),
                    "host": socket.gethostname(),
                    "testviper_version": __version__,
                    **(meta or {}),
                    "members": [m.as_dict() for m in members],
                }
                data = json.dumps(manifest, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = len(data), 0o644, int(now.timestamp())
                tar.addfile(info, _Hashing(_BytesReader(data)))  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        final = _publish(tmp, dest, name)
    except OSError as exc:
        raise UserError(
            f"{dest}: cannot write the backup ({exc.strerror or exc}); no archive was kept"
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secrets = any(m.kind == "secrets" for m in members)
    return Created(final, members, final.stat().st_size, secrets)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return chunk


def _add(tar: tarfile.TarFile, item: Item, source: Path) -> Member:
    with open(source, "rb") as handle:
        st = os.fstat(handle.fileno())
        info = tarfile.TarInfo(item.name)
        info.size, info.mtime = st.st_size, int(st.st_mtime)
        info.mode = 0o600 if item.kind in ("secrets", "history") else st.st_mode & 0o644
        reader = _Hashing(handle)
        tar.addfile(info, reader)  # type: ignore[arg-type]
    return Member(item.name, item.kind, reader.size, reader.sha.hexdigest(), info.mode)


def create_backup(
    settings: Settings,
    dest: Path | None = None,
    include_secrets: bool = False,
    reports_days: int | None = None,
    history: bool = True,
) -> Created:
    """``inv backup``: archive the project's config, history and recent reports."""
    dest = dest or settings.state_dir / "backups"
    items = collect(settings, include_secrets, reports_days, history)
    meta = {
        "project": settings.project_name,
        "config": f"root/{settings.path.name}" if settings.path else None,
        "paths_state": settings.config.paths.state,
        "history_schema": _schema_version(items),
    }
    return write_archive(items, dest, meta=meta, busy_timeout=settings.config.history.busy_timeout)


def _schema_version(items: Sequence[Item]) -> int | None:
    for item in items:
        if item.kind == "history":
            with contextlib.suppress(sqlite3.Error, TypeError):
                con = sqlite3.connect(f"file:{item.source}?mode=ro", uri=True)
                try:
                    return int(con.execute("SELECT max(version) FROM schema_info").fetchone()[0])
                finally:
                    con.close()
    return None


# -- listing and retention ------------------------------------------------------------


def list_backups(dest: Path) -> list[BackupInfo]:
    """The archives in ``dest`` (by their names), newest first."""
    found = []
    if not dest.is_dir():
        return found
    for path in dest.iterdir():
        match = NAME.match(path.name)
        if match and path.is_file() and not path.is_symlink():
            created = datetime.strptime(match["ts"], TS_FORMAT).replace(tzinfo=UTC)
            found.append(BackupInfo(path, created, match["prefix"], path.stat().st_size))
    return sorted(found, key=lambda b: (b.created, b.path.name), reverse=True)


def _buckets(policy: Policy) -> list[tuple[str, int, Callable[[datetime], Any]]]:
    return [
        ("daily", policy.daily, lambda t: t.date()),
        # ISO weeks: Monday 00:00 to Sunday 23:59, as restic.
        ("weekly", policy.weekly, lambda t: t.isocalendar()[:2]),
        ("monthly", policy.monthly, lambda t: (t.year, t.month)),
    ]


def select_keep(
    timestamps: Sequence[datetime], policy: Policy
) -> tuple[list[datetime], list[datetime], dict[datetime, list[str]]]:
    """restic's ``forget`` rules: which snapshots to keep, which to remove, and why.

    For ``daily n``: of the last n days that have a snapshot, keep each day's newest
    (weekly, monthly alike, on calendar boundaries). Rules are OR-ed. As restic does
    since 0.17, a rule with counts left over when the list runs out also keeps the
    oldest snapshot. An empty policy keeps everything.
    """
    ordered = sorted(timestamps, reverse=True)
    if policy.empty:
        return ordered, [], {t: ["no policy"] for t in ordered}
    rules = [[name, count, key, None] for name, count, key in _buckets(policy) if count]
    keep, remove, reasons = [], [], {}
    for i, ts in enumerate(ordered):
        why = []
        for rule in rules:
            name, count, key, last = rule
            if count == 0:
                continue
            value = key(ts)
            if value != last or i == len(ordered) - 1:
                why.append(f"{name} {value}" if value != last else f"oldest ({name})")
                rule[3] = value
                if count > 0:
                    rule[1] = count - 1
        if why:
            keep.append(ts)
            reasons[ts] = why
        else:
            remove.append(ts)
    return keep, remove, reasons


def prune(dest: Path, policy: Policy, dry_run: bool = False) -> tuple[list[Path], list[Path]]:
    """Apply ``policy`` to the regular backups in ``dest``; safety backups are kept."""
    backups = [b for b in list_backups(dest) if b.prefix == BACKUP_PREFIX]
    by_time = {b.created: b.path for b in backups}
    keep, remove, _ = select_keep(list(by_time), policy)
    removed = [by_time[t] for t in remove]
    if not dry_run:
        for path in removed:
            path.unlink(missing_ok=True)
        if removed:
            fsync_dir(dest)
    return [by_time[t] for t in keep], removed


# -- reading and verifying ------------------------------------------------------------


def check_member_name(name: str) -> str | None:
    """Why ``name`` is not acceptable as an archive member name, or None."""
    if not name or "\\" in name or "\x00" in name:
        return "is not a plain relative name"
    if name.startswith("/"):
        return "has an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "climbs out of the destination with '..'"
    if name != MANIFEST and (len(parts) < 2 or parts[0] not in ("root", "state")):
        return "is not a TestViper backup member"
    return None


def _member_type(member: tarfile.TarInfo) -> str | None:
    if member.isreg():
        return None
    if member.issym():
        return f"is a symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"is a hard link (to '{member.linkname}')"
    if member.isdev():
        return "is a device or FIFO"
    if member.isdir():
        return "is a directory"
    return "is not a regular file"


def _read_manifest(data: bytes, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
        version = manifest["format_version"]
        entries = manifest["members"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: {MANIFEST} is not a valid manifest") from None
    if not isinstance(version, int) or not isinstance(entries, list):
        raise UserError(f"{path}: {MANIFEST} is not a valid manifest")
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path}: backup format {version} is newer than this TestViper understands "
            f"({FORMAT_VERSION}); restore it with a newer TestViper"
        )
    return manifest


def _in_place(member: Member, config: object) -> bool:
    """Whether a member of this kind may have this name (restore targets follow names)."""
    parts = PurePosixPath(member.name).parts
    if member.kind == "config":
        return member.name == config and len(parts) == 2
    if member.kind == "schedules":
        return member.name == f"root/{SCHEDULES}"
    if member.kind == "secrets":
        return member.name == "root/.env"
    if member.kind == "history":
        return member.name == HISTORY_MEMBER
    return parts[:2] == ("state", "reports") and len(parts) > 2


def _manifest_members(manifest: dict[str, Any], path: Path) -> dict[str, Member]:
    members: dict[str, Member] = {}
    for entry in manifest["members"]:
        try:
            member = Member(
                str(entry["name"]),
                str(entry["kind"]),
                int(entry["size"]),
                str(entry["sha256"]),
                int(entry.get("mode", 0o644)),
            )
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: {MANIFEST} has a malformed entry") from None
        problem = check_member_name(member.name)
        if problem or member.name == MANIFEST:
            raise UserError(f"{path}: manifest entry '{member.name}' {problem or 'is reserved'}")
        if member.kind not in KINDS:
            raise UserError(f"{path}: manifest entry '{member.name}' has unknown kind")
        if not _in_place(member, manifest.get("config")):
            raise UserError(
                f"{path}: refusing member '{member.name}': a {member.kind} file is not "
                "stored there in a TestViper backup"
            )
        if member.name in members:
            raise UserError(f"{path}: manifest lists '{member.name}' twice")
        members[member.name] = member
    return members


def read_archive(path: Path, staging_parent: Path | None = None) -> Verified:
    """Stream ``path`` once, check every member, stage the content; raise on any doubt.

    Nothing outside a fresh staging directory is written; on any error that directory
    is removed again.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such backup archive")
    staging = Path(tempfile.mkdtemp(prefix=".testviper-restore-", dir=staging_parent))
    try:
        return _read(path, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read(path: Path, staging: Path) -> Verified:
    hashes: dict[str, tuple[int, str]] = {}
    staged: dict[str, Path] = {}
    manifest_data: bytes | None = None
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                name = member.name
                problem = check_member_name(name) or _member_type(member)
                if problem:
                    raise UserError(f"{path}: refusing member '{name}': {problem}")
                if name in hashes or (name == MANIFEST and manifest_data is not None):
                    raise UserError(f"{path}: refusing member '{name}': it appears twice")
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has content
                if name == MANIFEST:
                    if member.size > MANIFEST_MAX:
                        raise UserError(f"{path}: {MANIFEST} is implausibly large")
                    manifest_data = source.read()
                    continue
                target = staging / str(len(staged))
                sha, size = hashlib.sha256(), 0
                with _staging_file(target) as out:
                    while chunk := source.read(CHUNK):
                        sha.update(chunk)
                        size += len(chunk)
                        out(chunk)
                hashes[name] = (size, sha.hexdigest())
                staged[name] = target
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{path}: not a readable backup archive ({exc}); it is truncated, corrupt "
            "or not a TestViper tar.gz"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the archive ({exc.strerror or exc})") from None
    if manifest_data is None:
        raise UserError(f"{path}: no {MANIFEST}; not a TestViper backup")
    manifest = _read_manifest(manifest_data, path)
    members = _manifest_members(manifest, path)
    for name in hashes:
        if name not in members:
            raise UserError(f"{path}: refusing member '{name}': it is not in the manifest")
    for name, member in members.items():
        if name not in hashes:
            raise UserError(f"{path}: manifest lists '{name}' but the archive lacks it")
        size, digest = hashes[name]
        if (size, digest) != (member.size, member.sha256):
            raise UserError(f"{path}: checksum mismatch for '{name}'; the archive is damaged")
    verified = Verified(path, manifest, members, staged, staging)
    if HISTORY_MEMBER in staged:
        verified.runs, verified.last_run = check_database(staged[HISTORY_MEMBER], path)
    return verified


@contextlib.contextmanager
def _staging_file(target: Path) -> Iterator[Callable[[bytes], object]]:
    """Write to a staged file; a failure here is the disk's, not the archive's."""

    def fail(exc: OSError) -> UserError:
        return UserError(
            f"{target.parent}: cannot stage the archive's content ({exc.strerror or exc}); "
            "nothing was changed"
        )

    try:
        handle = open(target, "wb")  # noqa: SIM115 - closed below, errors told apart
    except OSError as exc:
        raise fail(exc) from None

    def write(chunk: bytes) -> object:
        try:
            return handle.write(chunk)
        except OSError as exc:
            raise fail(exc) from None

    try:
        yield write
    finally:
        try:
            handle.close()
        except OSError as exc:
            raise fail(exc) from None


def check_database(db: Path, archive: Path) -> tuple[int, str | None]:
    """Open a staged history snapshot, run the integrity check; (runs, newest run id)."""
    from testviper.history.schema import SCHEMA_VERSION

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            result = con.execute("PRAGMA integrity_check").fetchall()
            if result != [("ok",)]:
                first = result[0][0] if result else "no result"
                raise UserError(f"{archive}: the history database fails its check ({first})")
            version = con.execute("SELECT max(version) FROM schema_info").fetchone()[0]
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            last = con.execute("SELECT id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise UserError(f"{archive}: the history database does not open ({exc})") from None
    if version is None or int(version) > SCHEMA_VERSION:
        raise UserError(
            f"{archive}: history schema version {version} is not one this TestViper "
            f"understands (up to {SCHEMA_VERSION})"
        )
    return int(runs), last[0] if last else None


def verify(path: Path) -> Verified:
    """``inv backup.verify``: every check restore makes, then the staged copy is removed."""
    verified = read_archive(path)
    verified.cleanup()
    return verified
