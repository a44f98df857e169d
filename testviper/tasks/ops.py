"""``inv backup`` (``backup.list``, ``backup.verify``), ``inv restore``, ``inv cleanup``."""

from invoke import Collection, Context, task

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


def _state_lock(state_dir: object, name: str):
    from testviper.ops.locks import job_lock

    return job_lock(state_dir, name)  # type: ignore[arg-type]


@task(
    name="create",
    default=True,
    help={
        "config": CONFIG_HELP,
        "dest": "directory for the archive (default: <state>/backups/)",
        "include_secrets": "also archive .env (the archive is mode 0600 either way)",
        "reports_days": "include reports modified in the last N days "
        "(default: retention.backup_reports_days; 0: none)",
        "no_history": "leave the history database out (e.g. PostgreSQL: use pg_dump)",
        "keep_daily": "afterwards keep the newest archive of each of the last N days",
        "keep_weekly": "... of each of the last N weeks (Monday to Sunday)",
        "keep_monthly": "... of each of the last N months",
    },
)
@user_errors
def create(
    c: Context,
    config: str | None = None,
    dest: str | None = None,
    include_secrets: bool = False,
    reports_days: int = -1,
    no_history: bool = False,
    keep_daily: int = 0,
    keep_weekly: int = 0,
    keep_monthly: int = 0,
) -> None:
    """Back up config, schedules, the history database and recent reports to one tar.gz.

    The database is copied with SQLite's online backup API, so a run being stored
    meanwhile is either wholly in the archive or not at all. Every member's size and
    SHA-256 goes into MANIFEST.json. With --keep-* options, older archives in the
    destination are then removed the way `restic forget` would.
    """
    from pathlib import Path

    from testviper.ops import backup

    s = settings(config, check_paths=False)
    policy = backup.Policy(keep_daily, keep_weekly, keep_monthly)
    target = Path(dest).expanduser().resolve() if dest else s.state_dir / "backups"
    with _state_lock(s.state_dir, "backup"):
        made = backup.create_backup(
            s,
            target,
            include_secrets=include_secrets,
            reports_days=None if reports_days < 0 else reports_days,
            history=not no_history,
        )
        kinds = sorted({m.kind for m in made.members})
        print(
            f"backup {made.path} ({backup_size(made.size)}, {len(made.members)} files: "
            f"{', '.join(kinds) or 'nothing'})"
        )
        if made.secrets:
            print("contains secrets (.env): the archive is mode 0600; store it accordingly")
        elif include_secrets:
            print(f"no .env in {s.root}: no secrets were archived")
        if not policy.empty:
            kept, removed = backup.prune(target, policy)
            for path in removed:
                print(f"removed {path}")
            print(f"retention: kept {len(kept)} archives, removed {len(removed)}")


def backup_size(n: int) -> str:
    from testviper.ops.cleanup import size_text

    return size_text(n)


@task(
    name="list",
    help={"config": CONFIG_HELP, "dest": "directory to list (default: <state>/backups/)"},
)
@user_errors
def list_(c: Context, config: str | None = None, dest: str | None = None) -> None:
    """List the backup archives in the destination, newest first."""
    from pathlib import Path

    from testviper.ops import backup

    s = settings(config, check_paths=False)
    target = Path(dest).expanduser().resolve() if dest else s.state_dir / "backups"
    found = backup.list_backups(target)
    if not found:
        print(f"no backups in {target}; `inv backup` makes one")
        return
    for info in found:
        kind = "safety " if info.prefix == backup.SAFETY_PREFIX else ""
        print(f"{info.created:%Y-%m-%d %H:%M:%S}Z  {backup_size(info.size):>9}  {kind}{info.path}")


@task(
    name="verify",
    positional=["archive"],
    help={"config": CONFIG_HELP, "archive": "the .tar.gz to check"},
)
@user_errors
def verify(c: Context, archive: str, config: str | None = None) -> None:
    """Check an archive: members, manifest, SHA-256 of each file, database integrity."""
    from pathlib import Path

    from testviper.ops import backup

    checked = backup.verify(Path(archive))
    runs = f"; history: {checked.runs} runs" if checked.runs is not None else ""
    print(f"{checked.path}: ok ({len(checked.members)} members verified{runs})")


backup_ns = Collection("backup", create, list_, verify)


@task(
    positional=["archive"],
    help={
        "config": CONFIG_HELP + "; restored to this path",
        "archive": "the .tar.gz made by `inv backup`",
        "dry_run": "verify and print what would change; change nothing",
        "force": "replace existing files (after a safety backup of them)",
        "only": "restore only these parts: config, history, reports (comma-separated)",
    },
)
@user_errors
def restore(
    c: Context,
    archive: str,
    config: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    only: str | None = None,
) -> None:
    """Restore a backup: verified completely before anything on disk changes.

    Refuses unsafe or damaged archives, and existing files unless --force; with
    --force the files it replaces are first saved in <state>/backups/testviper-safety-*.
    Each file is replaced atomically; the database through SQLite's backup API.
    """
    import sys
    from pathlib import Path

    from invoke.exceptions import Exit

    from testviper.ops import backup
    from testviper.ops import restore as restore_ops

    restore_ops.parse_only(only)
    verified = backup.read_archive(Path(archive))
    try:
        plan = restore_ops.plan_restore(verified, config, only)
        print(restore_ops.format_plan(plan))
        if dry_run:
            if plan.conflicts and not force:
                print("dry run: nothing changed; replacing existing files needs --force")
            else:
                print("dry run: nothing changed")
            return
        if not plan.changes:
            print("nothing to restore: every file is already identical")
            return
        if plan.conflicts and not force:
            restore_ops.execute(plan, force=False)  # raises with the list of files
        with _state_lock(plan.state, "restore"):
            done = restore_ops.execute(plan, force=force)
    finally:
        verified.cleanup()
    if done.safety is not None:
        print(f"safety backup of the replaced files: {done.safety.path}")
    print(f"restored {len(plan.changes)} files")
    if done.history_summary:
        print(done.history_summary)
    if done.config_warning:
        print(f"testviper: warning: restored config: {done.config_warning}", file=sys.stderr)
    if done.config_problem:
        raise Exit(f"testviper: error: restored config does not validate: {done.config_problem}", 1)
    if plan.config_path is not None and plan.config_path.is_file():
        print(f"config {plan.config_path}: valid")


@task(help={"config": CONFIG_HELP, "dry_run": "list what would go, with sizes; change nothing"})
@user_errors
def cleanup(c: Context, config: str | None = None, dry_run: bool = False) -> None:
    """Apply retention: old run directories, history runs, report gzip, leftovers.

    Limits come from the config's `retention` section. Only the state directory is
    ever touched. --dry-run prints exactly the list the real run would process.
    """
    from testviper.ops import cleanup as ops

    s = settings(config, check_paths=False)
    if dry_run:
        plan = ops.plan_cleanup(s)
        for entry in plan.entries:
            print(ops.format_entry(entry))
        print(ops.format_totals(plan, dry_run=True))
        return
    if not s.state_dir.is_dir():
        print(f"nothing to clean: no state directory {s.state_dir}")
        return
    with _state_lock(s.state_dir, "cleanup"):
        plan = ops.plan_cleanup(s)
        for entry in plan.entries:
            print(ops.format_entry(entry))
        ops.execute_cleanup(s, plan)
        print(ops.format_totals(plan, dry_run=False))
