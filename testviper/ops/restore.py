"""``inv restore ARCHIVE``: verify everything, plan, then replace file by file.

1. The archive is read once by ``backup.read_archive``: every member checked (regular
   file, safe name, listed in the manifest, size and SHA-256), the history snapshot
   opened and integrity-checked. Staging happens in a fresh temp directory; nothing in
   the project or the state directory is touched until all of it passed.
2. The plan maps each member to its target: ``root/...`` under the project root (the
   config file's directory), the history snapshot to the configured SQLite database,
   ``state/reports/...`` under the state directory. If the archive's config is being
   restored, its ``paths.state`` and ``history.url`` decide where the rest goes.
3. Existing files that differ are only replaced with ``force``, and then only after a
   safety backup of exactly those files (``<state>/backups/testviper-safety-*``).
4. Each file is written to a temp file beside its target, fsynced and renamed, so a
   restore killed midway leaves every file either old or new. The database is written
   through SQLite's backup API into the live database (one transaction; readers and
   writers see the old or the new content), never by copying over the file.
"""

import hashlib
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from testviper import config as config_module
from testviper import config_file
from testviper.errors import UserError
from testviper.fsutil import fsync_dir
from testviper.ops.backup import (
    KINDS,
    PARTS,
    SAFETY_PREFIX,
    Created,
    Item,
    Member,
    Verified,
    sqlite_path,
    write_archive,
)

CHUNK = 1024 * 1024


@dataclass
class Action:
    op: str  # create | replace | unchanged
    member: Member
    target: Path


@dataclass
class Plan:
    archive: Verified
    actions: list[Action]
    root: Path
    state: Path
    config_path: Path | None
    history_url: str
    busy_timeout: float
    notes: list[str] = field(default_factory=list)

    @property
    def conflicts(self) -> list[Action]:
        return [a for a in self.actions if a.op == "replace"]

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op != "unchanged"]


@dataclass
class Restored:
    plan: Plan
    safety: Created | None
    config_problem: str | None
    config_warning: str | None
    history_summary: str | None


def parse_only(only: str | None) -> tuple[str, ...]:
    """``--only config,history`` -> the parts; everything when not given."""
    if not only:
        return PARTS
    parts = tuple(p.strip() for p in only.split(",") if p.strip())
    for part in parts:
        if part not in PARTS:
            raise UserError(f"--only: unknown part '{part}' (choose from {', '.join(PARTS)})")
    return parts


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _settings_from_text(text: str, path: Path, where: str) -> config_module.Settings:
    try:
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise UserError(f"{where}: the config is not a mapping of sections")
        raw = {k: v for k, v in raw.items() if v is not None}
        cfg = config_module.Config.model_validate(raw)
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: invalid YAML ({str(exc).splitlines()[0]})") from None
    except ValidationError as exc:
        raise UserError(f"{where}: {config_module._describe(exc)}") from None
    return config_module.Settings(config=cfg, path=path, root=path.parent)


def _where_to(
    verified: Verified, explicit: str | None, parts: tuple[str, ...]
) -> tuple[Path, Path | None, config_module.Settings]:
    """The project root, the config file target and the settings that place the rest."""
    named = explicit or os.environ.get(config_file.CONFIG_ENV)
    archived = verified.manifest.get("config")
    has_config = isinstance(archived, str) and archived in verified.members
    if named:
        config_path: Path | None = Path(named).expanduser().resolve()
    else:
        default = Path.cwd() / config_file.CONFIG_NAME
        config_path = default.resolve() if default.is_file() else None
        if config_path is None and has_config:
            config_path = Path.cwd().resolve() / Path(archived).name
    root = config_path.parent if config_path else Path.cwd().resolve()
    if "config" in parts and has_config and config_path is not None:
        text = verified.staged[archived].read_text(encoding="utf-8")
        settings = _settings_from_text(text, config_path, f"{verified.path}: archived config")
    elif config_path is not None and config_path.is_file():
        settings = config_module.load(config_path, check_paths=False)
    else:
        settings = config_module.Settings(config=config_module.Config(), path=None, root=root)
    return root, config_path, settings


def _inside(target: Path, base: Path) -> bool:
    """Whether ``target`` lands inside ``base`` once existing symlinks are followed."""
    # resolve() follows the links that exist and keeps the missing rest as written.
    return target.parent.resolve().is_relative_to(base.resolve())


def plan_restore(
    verified: Verified, explicit_config: str | None = None, only: str | None = None
) -> Plan:
    """What restoring ``verified`` would do; changes nothing."""
    parts = parse_only(only)
    root, config_path, settings = _where_to(verified, explicit_config, parts)
    state = settings.state_dir
    archived_config = verified.manifest.get("config")
    actions: list[Action] = []
    notes: list[str] = []
    for name, member in sorted(verified.members.items()):
        if KINDS[member.kind] not in parts:
            continue
        rel = Path(*Path(name).parts[1:])
        if name == archived_config and config_path is not None:
            target, base = config_path, config_path.parent
        elif member.kind == "history":
            db = sqlite_path(settings.history_url)
            if db is None:
                raise UserError(
                    "history.url points at a server database: restoring a SQLite snapshot "
                    "into it is not supported; use --only config,reports"
                )
            target, base = db, db.parent
        elif name.startswith("root/"):
            target, base = root / rel, root
        else:
            target, base = state / rel, state
        if not _inside(target, base):
            raise UserError(f"{target}: refusing to restore through a symlink out of {base}")
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise UserError(f"{target}: exists and is not a regular file; move it away first")
        if not target.exists():
            op = "create"
        elif member.kind == "history":
            op = "replace"
        else:
            op = "unchanged" if _sha256(target) == member.sha256 else "replace"
        actions.append(Action(op, member, target))
    if verified.manifest.get("config") is None:
        notes.append("the archive holds no config file")
    return Plan(
        verified,
        actions,
        root,
        state,
        config_path,
        settings.history_url,
        settings.config.history.busy_timeout,
        notes,
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def format_plan(plan: Plan) -> str:
    man = plan.archive.manifest
    lines = [
        f"archive {plan.archive.path}: verified ({len(plan.archive.members)} members, "
        f"created {man.get('created_at')} on {man.get('host')}, "
        f"TestViper {man.get('testviper_version')})"
    ]
    for action in plan.actions:
        extra = ""
        if action.member.kind == "history":
            extra = f", history database: {plan.archive.runs} runs"
            if plan.archive.last_run:
                extra += f", last {plan.archive.last_run}"
        lines.append(f"  {action.op:<9}  {action.target}  ({_size(action.member.size)}{extra})")
    counts = {op: sum(a.op == op for a in plan.actions) for op in ("create", "replace")}
    unchanged = len(plan.actions) - sum(counts.values())
    lines.append(
        f"{counts['create']} to create, {counts['replace']} to replace, {unchanged} unchanged"
    )
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def _install(staged: Path, target: Path, mode: int) -> None:
    """Copy ``staged`` to ``target`` through a fsynced temp file and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(staged, "rb") as src:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode & 0o777)
        if target.exists() and os.geteuid() == 0:
            # Restoring as root: the replaced file keeps its owner, not root's.
            st = target.stat()
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def restore_database(staged: Path, db: Path, busy_timeout: float = 10.0) -> None:
    """Write the snapshot into the live database with the backup API (one transaction)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    try:
        src = sqlite3.connect(f"file:{staged}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(db, timeout=busy_timeout)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=WAL")
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise UserError(f"{db}: cannot restore the history database ({exc})") from None


def safety_backup(plan: Plan) -> Created | None:
    """Archive exactly the files the plan replaces, before anything is replaced."""
    if not plan.conflicts:
        return None
    items = [Item(a.member.name, a.member.kind, a.target) for a in plan.conflicts]
    meta = {
        "config": plan.archive.manifest.get("config"),
        "paths_state": plan.archive.manifest.get("paths_state"),
        "safety_for": str(plan.archive.path),
    }
    return write_archive(
        items, plan.state / "backups", SAFETY_PREFIX, meta, busy_timeout=plan.busy_timeout
    )


def execute(plan: Plan, force: bool = False) -> Restored:
    """Carry out ``plan``; refuses to replace anything without ``force``."""
    if plan.conflicts and not force:
        shown = ", ".join(str(a.target) for a in plan.conflicts[:3])
        more = f" and {len(plan.conflicts) - 3} more" if len(plan.conflicts) > 3 else ""
        raise UserError(
            f"restore would overwrite {len(plan.conflicts)} existing file(s) ({shown}{more}); "
            "rerun with --force (a safety backup is taken first) or see --dry-run"
        )
    safety = safety_backup(plan) if force else None
    for action in plan.changes:
        staged = plan.archive.staged[action.member.name]
        if action.member.kind == "history":
            restore_database(staged, action.target, plan.busy_timeout)
        else:
            mode = 0o600 if action.member.kind == "secrets" else action.member.mode
            _install(staged, action.target, mode)
    return Restored(plan, safety, *_check_config(plan), _history_summary(plan))


def _check_config(plan: Plan) -> tuple[str | None, str | None]:
    """(error, warning): the restored config must be valid; missing paths only warn."""
    if plan.config_path is None or not plan.config_path.is_file():
        return None, None
    try:
        config_module.load(plan.config_path, check_paths=False)
    except UserError as exc:
        return str(exc), None
    try:
        config_module.load(plan.config_path)
    except UserError as exc:
        return None, str(exc)
    return None, None


def _history_summary(plan: Plan) -> str | None:
    if not any(a.member.kind == "history" for a in plan.changes):
        return None
    from testviper.history.store import list_runs, open_history

    history = open_history(plan.history_url, plan.busy_timeout)
    try:
        rows = list_runs(history, limit=1)
    finally:
        history.engine.dispose()
    if not rows:
        return "history: no runs"
    last = rows[0]
    return (
        f"history: {plan.archive.runs} runs; last run {last.id} started {last.started_at} "
        f"({last.status}, {last.passed} passed, {last.failed} failed)"
    )
