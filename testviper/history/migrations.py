"""Forward-only schema migrations, applied when the history is opened.

A new database gets the current schema in one step and is stamped with
SCHEMA_VERSION (Alembic's "create_all, then stamp head" recipe). An older database
walks through STEPS, each in its own transaction, from its version to the current one.

Adding a version: change ``schema.py``, bump SCHEMA_VERSION, append a step that turns
the previous version into the new one. A step must leave the database in the shape of
its own version: if a later version changes a table a step creates, freeze that
table's old definition inside the step first.
"""

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from testviper.errors import UserError
from testviper.history import schema


def _add_column(conn: Connection, table: sa.Table, name: str) -> None:
    # The column's full DDL (type, NOT NULL, server default): existing rows take the
    # default, so the migrated column is the same as one made by create_all.
    ddl = CreateColumn(table.c[name]).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))


def _v1_to_v2(conn: Connection) -> None:
    """Run labels (TV_COMPONENT_NAME), RP deliveries and resource profiles."""
    _add_column(conn, schema.runs, "label")
    schema.deliveries.create(conn)
    schema.profiles.create(conn)


def _v2_to_v3(conn: Connection) -> None:
    """The audit trail of `inv rotate-keys`."""
    schema.key_rotations.create(conn)


def _v3_to_v4(conn: Connection) -> None:
    """Reruns per test (pytest-rerunfailures); earlier rows had none: 0."""
    _add_column(conn, schema.tests, "reruns")


# STEPS[v] turns version v into version v + 1.
STEPS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def current_version(conn: Connection) -> int | None:
    """The database's schema version, or None for an empty database."""
    if not sa.inspect(conn).has_table(schema.schema_info.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema.schema_info.c.version))).scalar()


def migrate(engine: sa.Engine, where: str) -> int:
    """Bring the database at ``engine`` to SCHEMA_VERSION; return the version found."""
    with engine.begin() as conn:
        found = current_version(conn)
        if found is None:
            schema.metadata.create_all(conn)
            conn.execute(schema.schema_info.insert().values(version=schema.SCHEMA_VERSION))
            return 0
    if found > schema.SCHEMA_VERSION:
        raise UserError(
            f"{where}: history schema version {found} is newer than this TestViper "
            f"understands ({schema.SCHEMA_VERSION}); upgrade TestViper"
        )
    for version in range(found, schema.SCHEMA_VERSION):
        with engine.begin() as conn:
            STEPS[version](conn)
            conn.execute(schema.schema_info.update().values(version=version + 1))
    return found
