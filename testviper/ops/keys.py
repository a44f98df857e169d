"""``inv rotate-keys``: replace an instance's ReportPortal API key in ``.env``, safely.

The new key comes from stdin or a named environment variable, never from the command
line (``ps`` shows argv). Order, so that a failure at any step leaves a working setup:

1. verify the new key against the instance (``GET /api/users``, the project's settings);
   a rejected key changes nothing;
2. under the ``rotate-keys`` lock, write ``.env`` atomically (temp file, fsync, rename),
   keeping its mode (0600 for a new file), its owner and every other line; the old key
   stays as ``<VAR>_PREVIOUS`` for an overlap window unless ``--no-overlap``;
3. read the file back; if it does not hold the new key, put the old bytes back;
4. record the rotation in history: instance, time, fingerprints, never a key;
5. with ``--revoke-old``, delete the old key through the API (found by its name, the part
   of a ``name_<base64>`` key before the last ``_``), or print the manual step.

A key is only ever shown as its fingerprint, the first 6 hex characters of its SHA-256.
"""

import contextlib
import getpass
import hashlib
import io
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from testviper.config import Instance, Settings
from testviper.errors import UserError
from testviper.fsutil import atomic_write
from testviper.reporter.masking import Masker

PREVIOUS_SUFFIX = "_PREVIOUS"
NEW_FILE_MODE = 0o600
# What an RP key is made of (legacy UUIDs and `name_<base64>` keys); it also keeps
# anything out of .env that would need quoting or could start a new line.
KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
MANUAL_STEP = (
    "revoke the old key by hand: in ReportPortal open Profile > API Keys and delete "
    "the key with fingerprint {fp}"
)


class KeyRejected(UserError):
    """The instance refused the new key, or could not be asked: nothing changed. Exit 1."""

    exit_code = 1


def fingerprint(key: str) -> str:
    """What may be shown or stored about a key: the first 6 hex characters of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:6]


def find_instance(settings: Settings, name: str) -> Instance:
    instances = settings.config.reportportal.instances
    for inst in instances:
        if inst.name == name:
            return inst
    names = ", ".join(i.name for i in instances) or "none"
    raise UserError(f"--instance {name}: no such ReportPortal instance (configured: {names})")


def parse_key(raw: str, source: str) -> str:
    """The key in ``raw`` (surrounding whitespace dropped); UserError if it is not one."""
    key = raw.strip()
    if not key:
        raise UserError(f"{source}: no key given (empty); nothing changed")
    if not KEY_CHARS.match(key):
        # Never echo the input: it may be a key with a stray character.
        raise UserError(
            f"{source}: not an API key (one line of letters, digits and . _ ~ + / = -); "
            "nothing changed"
        )
    return key


def dotenv_path(settings: Settings) -> Path:
    """The ``.env`` next to the config (through a symlink to its target)."""
    return (settings.root / ".env").resolve()


# --------------------------------------------------------------------------- HTTP


class Server:
    """Single authenticated requests to one instance, through the delivery layer's Api."""

    def __init__(self, instance: Instance, masker: Masker) -> None:
        self.instance = instance
        self.masker = masker
        self.apis: dict[str, Any] = {}  # one Api (and its keep-alive connection) per key

    def request(self, method: str, path: str, key: str) -> tuple[int, dict[str, Any]]:
        """Status and JSON body; KeyRejected (exit 1) when the server cannot be reached."""
        from testviper.reporter.api import Api, DeliveryError, TransportError, _json

        api = self.apis.get(key)
        if api is None:
            api = self.apis[key] = Api(self.instance, key, self.instance.timeout * 4, self.masker)
        try:
            resp = api.request(method, path, root=True)
        except (TransportError, DeliveryError) as exc:
            raise KeyRejected(
                f"cannot reach instance {self.instance.name} at {self.instance.endpoint} "
                f"({self.masker(str(exc))}); nothing changed"
            ) from None
        return resp.status, _json(resp.data)

    def close(self) -> None:
        for api in self.apis.values():
            api.close()

    def message(self, data: dict[str, Any]) -> str:
        return self.masker(" ".join(str(data.get("message") or "").split())[:200])


def verify_key(server: Server, key: str) -> Any:
    """Check ``key`` with authenticated reads; return the user id. KeyRejected if refused."""
    inst = server.instance
    checks = (
        ("GET /api/users", "/api/users"),
        (
            f"the settings of project {inst.project}",
            f"/api/v1/{quote(inst.project, safe='')}/settings",
        ),
    )
    user: dict[str, Any] = {}
    for what, path in checks:
        status, data = server.request("GET", path, key)
        if status == 200:
            user = user or data
            continue
        detail = f"HTTP {status}" + (f": {server.message(data)}" if data.get("message") else "")
        if status in (401, 403):
            raise KeyRejected(
                f"instance {inst.name} rejected the new key ({detail}); nothing changed"
            )
        raise KeyRejected(
            f"instance {inst.name} did not accept the new key for {what} ({detail}); "
            "nothing changed"
        )
    return user.get("id")


def revoke(server: Server, user_id: Any, old: str, new: str) -> tuple[bool, str]:
    """Delete the ``old`` key on the server, authenticated with ``new``: (done, message).

    Never raises for the server's sake: the rotation has happened by now, so a failure
    here is a manual step to print, not an error.
    """
    manual = MANUAL_STEP.format(fp=fingerprint(old))
    try:
        return _revoke(server, user_id, old, new, manual)
    except KeyRejected:
        return False, f"{server.instance.endpoint} could not be reached to revoke; {manual}"


def _revoke(server: Server, user_id: Any, old: str, new: str, manual: str) -> tuple[bool, str]:
    if user_id is None:
        return False, f"the server did not say which user the key belongs to; {manual}"
    base = f"/api/users/{quote(str(user_id), safe='')}/api-keys"
    status, data = server.request("GET", base, new)
    if status in (404, 405, 501):
        return False, f"this ReportPortal has no API key endpoints (HTTP {status}); {manual}"
    if status != 200:
        return False, f"listing the API keys failed (HTTP {status}); {manual}"
    items = data.get("items") if isinstance(data.get("items"), list) else []
    # `name_<base64>` keys start with their name; a legacy UUID key has none to match.
    matches = [
        item
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and old.startswith(item["name"] + "_")
        and not new.startswith(item["name"] + "_")
    ]
    if len(matches) != 1:
        why = "no" if not matches else "more than one"
        return False, f"{why} API key on the server matches the old key's name; {manual}"
    key_id, name = matches[0].get("id"), matches[0]["name"]
    status, data = server.request("DELETE", f"{base}/{quote(str(key_id), safe='')}", new)
    if status not in (200, 204):
        detail = f"HTTP {status}" + (f": {server.message(data)}" if data.get("message") else "")
        return False, f"revoking the old key '{name}' failed ({detail}); {manual}"
    status, _ = server.request("GET", "/api/users", old)
    if status not in (401, 403):
        return False, f"the old key '{name}' was deleted but still works (HTTP {status}); {manual}"
    return True, f"revoked the old key '{name}' (fingerprint {fingerprint(old)}) on the server"


# --------------------------------------------------------------------------- .env


def _setting(var: str) -> re.Pattern[str]:
    return re.compile(rf"^(\s*(?:export\s+)?){re.escape(var)}\s*=")


def updated_dotenv(text: str, var: str, new: str, previous: str | None) -> str:
    """``text`` with ``var=new`` and ``var_PREVIOUS=previous`` (removed when None).

    Every other line, comment and line ending stays as it was. The first assignment of
    a variable is replaced in place, later ones (which would win) are dropped; a missing
    ``var`` is appended, a missing ``_PREVIOUS`` goes right after it.
    """
    prev_var = var + PREVIOUS_SUFFIX
    own, prev = _setting(var), _setting(prev_var)
    out: list[str] = []
    seen_var = seen_prev = False
    var_at = -1
    for line in text.splitlines(keepends=True):
        eol = line[len(line.rstrip("\r\n")) :] or "\n"
        if m := own.match(line):
            if not seen_var:
                out.append(f"{m.group(1)}{var}={new}{eol}")
                var_at = len(out)
            seen_var = True
            continue
        if m := prev.match(line):
            if not seen_prev and previous is not None:
                out.append(f"{m.group(1)}{prev_var}={previous}{eol}")
            seen_prev = True
            continue
        out.append(line)
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    if not seen_var:
        out.append(f"{var}={new}\n")
        var_at = len(out)
    if previous is not None and not seen_prev:
        out.insert(var_at, f"{prev_var}={previous}\n")
    return "".join(out)


def _values(text: str) -> dict[str, str | None]:
    from dotenv import dotenv_values

    return dict(dotenv_values(stream=io.StringIO(text)))


@dataclass
class EnvFile:
    """``.env`` as found before the rotation: enough to write it back exactly."""

    path: Path
    data: bytes | None  # None: no file
    mode: int = NEW_FILE_MODE
    uid: int = -1
    gid: int = -1

    @classmethod
    def read(cls, path: Path) -> "EnvFile":
        try:
            st = path.stat()
        except FileNotFoundError:
            return cls(path, None)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path}: not a regular file; nothing changed")
        data = path.read_bytes()
        return cls(path, data, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)

    @property
    def text(self) -> str:
        try:
            return (self.data or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: not UTF-8 text; nothing changed") from None

    def write(self, data: bytes) -> None:
        """Replace the file atomically with this mode, then give it back to its owner."""
        atomic_write(self.path, data, mode=self.mode)
        if self.uid >= 0 and (self.uid, self.gid) != (os.geteuid(), os.getegid()):
            # Only root can; a writer that is not root owned the file anyway.
            with contextlib.suppress(PermissionError):
                os.chown(self.path, self.uid, self.gid)

    def restore(self) -> None:
        if self.data is None:
            self.path.unlink(missing_ok=True)
        else:
            self.write(self.data)


# --------------------------------------------------------------------------- history


def _history(settings: Settings) -> Any:
    from testviper.runner.run import connect

    return connect(settings)


def record(settings: Settings, row: dict[str, Any]) -> tuple[Any, int]:
    """Insert a rotation row (no key in it); return the history and the row id."""
    from testviper.history import schema

    history = _history(settings)
    with history.begin() as conn:
        result = conn.execute(schema.key_rotations.insert().values(**row))
    return history, int(result.inserted_primary_key[0])


def set_old_key_state(history: Any, row_id: int, state: str) -> None:
    import sqlalchemy as sa

    from testviper.history import schema

    table = schema.key_rotations
    with history.begin() as conn:
        conn.execute(sa.update(table).where(table.c.id == row_id).values(old_key=state))


def last_rotations(settings: Settings) -> dict[str, datetime]:
    """The newest rotation time per instance; empty when there is no history yet."""
    import sqlalchemy as sa

    from testviper.history import schema

    if settings.config.history.url is None and not (settings.state_dir / "history.sqlite").exists():
        return {}  # a check must not create the database
    table = schema.key_rotations
    query = sa.select(table.c.instance, sa.func.max(table.c.rotated_at)).group_by(table.c.instance)
    history = _history(settings)
    try:
        with history.engine.connect() as conn:
            return {name: when for name, when in conn.execute(query)}
    finally:
        history.engine.dispose()


# --------------------------------------------------------------------------- rotation


@dataclass
class Outcome:
    instance: str
    variable: str
    path: Path
    fingerprint: str
    previous_fingerprint: str | None
    overlap: bool
    created: bool
    old_key: str  # revoked | manual | kept | none
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _actor() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def rotate(
    settings: Settings,
    instance: Instance,
    new: str,
    overlap: bool = True,
    revoke_old: bool = False,
) -> Outcome:
    """Verify ``new``, put it in ``.env``, record it, optionally revoke the old key."""
    from testviper.ops.locks import job_lock

    var = instance.api_key_env
    path = dotenv_path(settings)
    masker = Masker([new, *(settings.secret(n) for n in (var, var + PREVIOUS_SUFFIX))])
    server = Server(instance, masker)
    try:
        user_id = verify_key(server, new)  # before anything changes
        with job_lock(settings.state_dir, "rotate-keys"):
            before = EnvFile.read(path)
            old = _values(before.text).get(var) or None
            if old == new:
                raise UserError(
                    f"{path}: {var} already holds this key (fingerprint {fingerprint(new)}); "
                    "nothing changed"
                )
            masker = Masker([new, old])
            server.masker = masker
            keep = old if overlap and old else None
            text = updated_dotenv(before.text, var, new, keep)
            before.write(text.encode())
            try:
                check = _values(EnvFile.read(path).text)
                if check.get(var) != new or check.get(var + PREVIOUS_SUFFIX) != keep:
                    raise UserError(f"{path}: reading the file back did not give the new key")
                history, row_id = record(
                    settings,
                    {
                        "instance": instance.name,
                        "variable": var,
                        "rotated_at": datetime.now(UTC).replace(tzinfo=None),
                        "fingerprint": fingerprint(new),
                        "previous_fingerprint": fingerprint(old) if old else None,
                        "overlap": keep is not None,
                        "old_key": "kept" if old else "none",
                        "actor": _actor(),
                        "host": socket.gethostname(),
                    },
                )
            except BaseException:
                before.restore()  # the old key is still valid: go back to it
                raise
            outcome = Outcome(
                instance=instance.name,
                variable=var,
                path=path,
                fingerprint=fingerprint(new),
                previous_fingerprint=fingerprint(old) if old else None,
                overlap=keep is not None,
                created=before.data is None,
                old_key="kept" if old else "none",
            )
            if before.mode & 0o077 and before.data is not None:
                outcome.warnings.append(
                    f"{path} is readable by others (mode {before.mode:04o}); "
                    f"consider `chmod 600 {path}`"
                )
            env_value = os.environ.get(var)
            if env_value and env_value != new:
                outcome.warnings.append(
                    f"{var} is also set in the environment, which takes precedence over "
                    f"{path}; update it there too"
                )
            if revoke_old and old:
                done, message = revoke(server, user_id, old, new)
                outcome.old_key = "revoked" if done else "manual"
                (outcome.notes if done else outcome.warnings).append(message)
                try:
                    set_old_key_state(history, row_id, outcome.old_key)
                    if done and keep is not None:
                        # A revoked key is of no use in the overlap window.
                        EnvFile.read(path).write(updated_dotenv(text, var, new, None).encode())
                        outcome.overlap = False
                finally:
                    history.engine.dispose()
            else:
                history.engine.dispose()
                if revoke_old:
                    outcome.notes.append(f"no old key in {path}: nothing to revoke")
            return outcome
    finally:
        server.close()


# --------------------------------------------------------------------------- --check


@dataclass
class KeyAge:
    instance: str
    variable: str
    is_set: bool
    since: datetime | None  # aware UTC
    source: str  # "rotation" | ".env mtime" | "unknown"
    days: float | None
    too_old: bool


def key_ages(settings: Settings, now: datetime | None = None) -> list[KeyAge]:
    """Each instance's key age: from its last rotation, else from ``.env``'s mtime."""
    now = now or datetime.now(UTC)
    limit = settings.config.reportportal.max_key_age_days
    rotations = last_rotations(settings)
    path = dotenv_path(settings)
    try:
        mtime: datetime | None = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        mtime = None
    out = []
    for inst in settings.config.reportportal.instances:
        rotated = rotations.get(inst.name)
        var = inst.api_key_env
        in_dotenv = bool(settings.dotenv.get(var))
        if rotated is not None:
            since, source = rotated.replace(tzinfo=UTC), "last rotation"
        elif in_dotenv and mtime is not None:
            since, source = mtime, f"{path.name} modified"
        else:
            since, source = None, "unknown"
        days = (now - since).total_seconds() / 86400 if since else None
        out.append(
            KeyAge(
                instance=inst.name,
                variable=var,
                is_set=bool(settings.secret(var)),
                since=since,
                source=source,
                days=days,
                too_old=days is not None and days > limit,
            )
        )
    return out
