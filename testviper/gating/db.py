"""Read-only access to the history for the gate, in plain SQL.

Two drivers, one set of statements. The gate only reads, and CI calls it on every push,
so for the default SQLite history (a plain ``sqlite:///FILE`` URL) it uses the standard
library's ``sqlite3`` and skips loading SQLAlchemy (about 0.13 s, a third of the
command). Every other URL (``postgresql://...``, or SQLite with driver options after
``?``) goes through the SQLAlchemy engine, which also translates the ``:name``
parameters for drivers with another style. One path would mean either SQLAlchemy on
every gate or no PostgreSQL; so both stay, the statements are portable SQL, and a test
runs the whole gate through each path on the same SQLite file and expects the same
verdict. A database older than the schema the queries need is first migrated through
the normal store; a missing one is not created.
"""

import sqlite3
from collections import namedtuple
from pathlib import Path
from typing import Any

from testviper.config import Settings
from testviper.errors import UserError
from testviper.history.records import only_run

NEEDED_SCHEMA = 4  # the version of testviper/history/schema.py these queries are written for


def in_list(name: str, values: list[Any], params: dict[str, Any]) -> str:
    """Placeholders for ``IN (...)``, filling ``params``; portable across drivers."""
    keys = [f"{name}{i}" for i in range(len(values))]
    params.update(zip(keys, values, strict=True))
    return "(" + ", ".join(f":{k}" for k in keys) + ")" if keys else "(NULL)"


def sqlite_file(url: str) -> Path | None:
    """The file of a plain SQLite URL, read with ``sqlite3``; None: use SQLAlchemy."""
    if url.startswith("sqlite:///") and "?" not in url:
        return Path(url.removeprefix("sqlite:///"))
    return None


_classes: dict[tuple[str, ...], Any] = {}


def _row_class(names: tuple[str, ...]) -> Any:
    if names not in _classes:
        _classes[names] = namedtuple("Row", names)
    return _classes[names]


class Reader:
    """``rows(sql, **params)``; ``exists`` is False when there is no history yet."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exists = True
        self._sqlite: sqlite3.Connection | None = None
        self._sa: Any = None
        path = sqlite_file(settings.history_url)
        if path is not None:
            self.where = str(path)
            if not path.is_file():
                self.exists = False
                return
            self._open_sqlite(path)
            if self._version() < NEEDED_SCHEMA:
                self._sqlite.close()  # type: ignore[union-attr]
                self._migrate()
                self._open_sqlite(path)
        else:
            history = self._migrate()
            self.where = history.where
            self._sa = history.engine.connect()

    def _open_sqlite(self, path: Path) -> None:
        timeout = self.settings.config.history.busy_timeout
        try:
            self._sqlite = sqlite3.connect(path, timeout=timeout)
        except sqlite3.Error as exc:
            raise UserError(f"{path}: cannot open the history database ({exc})") from None

    def _version(self) -> int:
        try:
            row = self.rows("SELECT MAX(version) AS v FROM schema_info")
        except UserError:
            return 0
        return int(row[0].v or 0)

    def _migrate(self) -> Any:
        from testviper.runner.run import connect

        return connect(self.settings)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        if not self.exists:
            return []
        if self._sqlite is not None:
            try:
                cursor = self._sqlite.execute(sql, params)
                make = _row_class(tuple(d[0] for d in cursor.description))._make
                return [make(row) for row in cursor.fetchall()]
            except sqlite3.DatabaseError as exc:
                raise UserError(f"{self.where}: history database error: {exc}") from None
        import sqlalchemy as sa

        return list(self._sa.execute(sa.text(sql), params))

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._sa is not None:
            self._sa.close()

    def find_run(self, id_prefix: str) -> Any:
        """The newest run, or the one run whose id starts with ``id_prefix``."""
        if id_prefix == "latest":
            rows = self.rows("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        else:
            escaped = id_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self.rows(
                "SELECT * FROM runs WHERE id LIKE :p ESCAPE '\\' ORDER BY id LIMIT 2",
                p=escaped + "%",
            )
        return only_run(rows, id_prefix)
