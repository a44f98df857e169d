"""The history schema as the code sees it today (the latest migration's result).

Queries use these tables; ``migrations.py`` builds them step by step. A test checks
that a migrated database has exactly these columns, so the two cannot drift apart.
Types are portable SQLAlchemy types, so ``history.url`` may name PostgreSQL.
"""

import sqlalchemy as sa

SCHEMA_VERSION = 4

metadata = sa.MetaData()

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
)

runs = sa.Table(
    "runs",
    metadata,
    # UUIDv7: sorting by id sorts by start time.
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("project", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("started_at", sa.DateTime, nullable=False, index=True),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("duration", sa.Float),
    sa.Column("git_commit", sa.String(64)),
    sa.Column("git_branch", sa.String(255), index=True),
    sa.Column("git_dirty", sa.Boolean),
    sa.Column("python", sa.String(50)),
    sa.Column("host", sa.String(255)),
    sa.Column("platform", sa.String(255)),
    sa.Column("ci", sa.JSON),
    sa.Column("command", sa.JSON),
    sa.Column("run_dir", sa.Text),
    sa.Column("tests_total", sa.Integer, nullable=False, default=0),
    sa.Column("passed", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("errors", sa.Integer, nullable=False, default=0),
    sa.Column("skipped", sa.Integer, nullable=False, default=0),
    sa.Column("xfailed", sa.Integer, nullable=False, default=0),
    sa.Column("xpassed", sa.Integer, nullable=False, default=0),
    sa.Column("cov_statements", sa.Integer),
    sa.Column("cov_missing", sa.Integer),
    sa.Column("cov_branches", sa.Integer),
    sa.Column("cov_covered_branches", sa.Integer),
    sa.Column("cov_percent", sa.Float),
    sa.Column("ingested_at", sa.DateTime, nullable=False),
    sa.Column("label", sa.String(200)),
)

tests = sa.Table(
    "tests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("nodeid", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(10), nullable=False),
    sa.Column("phase", sa.String(10), nullable=False),
    sa.Column("duration", sa.Float, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("log", sa.Text),
    # Most tests have neither: SQL NULL, not a serialised JSON 'null' per row.
    sa.Column("markers", sa.JSON(none_as_null=True)),
    sa.Column("params", sa.JSON(none_as_null=True)),
    sa.Column("worker", sa.String(20)),
    # Earlier attempts of a test that pytest-rerunfailures retried; the row holds the
    # last attempt, so a passed test with reruns is flaky by its own run's evidence.
    sa.Column("reruns", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Index("ix_tests_run_id", "run_id"),
    sa.Index("ix_tests_nodeid", "nodeid"),
)

file_coverage = sa.Table(
    "file_coverage",
    metadata,
    sa.Column(
        "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("statements", sa.Integer, nullable=False),
    sa.Column("missing", sa.Integer, nullable=False),
    sa.Column("excluded", sa.Integer, nullable=False),
    sa.Column("branches", sa.Integer, nullable=False),
    sa.Column("covered_branches", sa.Integer, nullable=False),
    sa.Column("percent", sa.Float, nullable=False),
    # Line numbers as compact ranges ("1-4,9"): patch coverage needs them after the
    # run directory is gone.
    sa.Column("executed_lines", sa.Text, nullable=False),
    sa.Column("missing_lines", sa.Text, nullable=False),
)

component_coverage = sa.Table(
    "component_coverage",
    metadata,
    sa.Column(
        "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("component", sa.String(200), primary_key=True),
    sa.Column("files", sa.Integer, nullable=False),
    sa.Column("statements", sa.Integer, nullable=False),
    sa.Column("missing", sa.Integer, nullable=False),
    sa.Column("branches", sa.Integer, nullable=False),
    sa.Column("covered_branches", sa.Integer, nullable=False),
    sa.Column("percent", sa.Float),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("instance", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("launch_uuid", sa.String(36)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("run_id", "instance", name="uq_deliveries_run_instance"),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(36), sa.ForeignKey("runs.id", ondelete="SET NULL")),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("wall", sa.Float, nullable=False),
    sa.Column("peak_rss", sa.BigInteger),
    sa.Column("cpu_mean", sa.Float),
    sa.Column("cpu_peak", sa.Float),
    sa.Column("children", sa.Integer),
    sa.Column("read_bytes", sa.BigInteger),
    sa.Column("write_bytes", sa.BigInteger),
)

# One row per `inv rotate-keys`: who rotated which instance's key when. Keys appear only
# as fingerprints (the first 6 hex characters of their SHA-256), never as values.
key_rotations = sa.Table(
    "key_rotations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("instance", sa.String(200), nullable=False, index=True),
    sa.Column("variable", sa.String(200), nullable=False),
    sa.Column("rotated_at", sa.DateTime, nullable=False),
    sa.Column("fingerprint", sa.String(16), nullable=False),
    sa.Column("previous_fingerprint", sa.String(16)),
    sa.Column("overlap", sa.Boolean, nullable=False),  # old key kept as <VAR>_PREVIOUS
    # revoked | manual (the server could not do it) | kept (not asked) | none (no old key)
    sa.Column("old_key", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(255)),
    sa.Column("host", sa.String(255)),
)
