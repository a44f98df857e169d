"""The ``config`` collection: write a sample, validate, show the effective settings."""

import sys

from invoke import Collection, Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(help={"path": "where to write it", "force": "overwrite an existing file"})
@user_errors
def init(c: Context, path: str = "testviper.yaml", force: bool = False) -> None:
    """Write a commented sample testviper.yaml."""
    from pathlib import Path

    from testviper.config import sample_text
    from testviper.errors import UserError
    from testviper.fsutil import atomic_write

    target = Path(path)
    if target.exists() and not force:
        raise Exit(f"testviper: error: {target} exists; use --force to overwrite it", code=2)
    try:
        atomic_write(target, sample_text())
    except OSError as exc:
        raise UserError(f"{target}: cannot write the sample config ({exc.strerror})") from None
    print(f"wrote {target}; edit it, then run `inv config.validate`")


@task(help={"config": CONFIG_HELP})
@user_errors
def validate(c: Context, config: str | None = None) -> None:
    """Validate the configuration; exit 2 with the exact problem if it is wrong."""
    s = settings(config)
    print(
        f"{s.source}: OK ({len(s.config.components)} components, "
        f"{len(s.config.reportportal.instances)} ReportPortal instances)"
    )


@task(help={"config": CONFIG_HELP})
@user_errors
def show(c: Context, config: str | None = None) -> None:
    """Print the effective configuration as YAML; secrets show only as set/not set."""
    from testviper.config import effective_yaml

    s = settings(config, check_paths=False)
    print(f"# source: {s.source}", file=sys.stderr)
    print(effective_yaml(s), end="")


@task(
    name="import-legacy",
    positional=["legacy_file"],
    help={
        "config": CONFIG_HELP,
        "legacy_file": "the old coverage_thresholds.json",
        "write": "replace the thresholds section of testviper.yaml (default: print it)",
    },
)
@user_errors
def import_legacy(
    c: Context, legacy_file: str, config: str | None = None, write: bool = False
) -> None:
    """Convert the old coverage_thresholds.json into the thresholds: section of testviper.yaml."""
    from pathlib import Path

    from testviper.gating.legacy import import_into_config

    s = settings(config, check_paths=False)
    text, notes = import_into_config(s, Path(legacy_file), write)
    for note in notes:
        print(f"testviper: note: {note}", file=sys.stderr)
    print(
        f"updated the thresholds section of {s.path}" if write else text, end="\n" if write else ""
    )


config = Collection("config", init, validate, show, import_legacy)
