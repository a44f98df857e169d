"""`inv backup` / `backup.verify` / `backup.list` / `restore` and the task locks.

Real files, real SQLite, real tar archives (the malicious ones built here with
tarfile), and the installed `testviper` script for exit codes and messages.
"""

import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from conftest import BIN, Cli, clean_env, write_files
from ops_helpers import dump, fill_history, make_run, tree_hash

from testviper.config import load
from testviper.errors import LockHeld, UserError
from testviper.history.store import open_history, save_run
from testviper.ops import backup
from testviper.ops.backup import Policy, select_keep
from testviper.ops.locks import job_lock

STATE = ".testviper"
EXTRA = {
    "ops/schedules.yaml": "daily:\n  at: '06:00'\n",
    ".env": "RP_API_KEY=sk-backup-secret-123\n",
    f"{STATE}/reports/tv_coverage_analytics_report_1.json": '{"coverage": 81.5}\n',
    f"{STATE}/reports/html/index.html": "<html>report</html>\n",
}


@pytest.fixture
def filled(project: Path) -> Path:
    """The sample project with schedules, .env, two reports and three stored runs."""
    write_files(project, EXTRA)
    base = datetime(2026, 11, 1, 12, 0)
    fill_history(project / STATE / "history.sqlite", [base + timedelta(hours=i) for i in range(3)])
    return project


def archive_from(done: subprocess.CompletedProcess[str]) -> Path:
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("backup "), done.stdout
    return Path(first.split()[1])


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *fragments: str):
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("testviper: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


# -- backup, verify, round trip ----------------------------------------------------


def test_backup_wipe_restore_gives_identical_files_and_rows(
    filled: Path, cli: Cli, tmp_path: Path
) -> None:
    """backup --include-secrets -> wipe everything -> restore: same bytes, same rows."""
    db = filled / STATE / "history.sqlite"
    rows = dump(db)
    files = [
        "testviper.yaml",
        "ops/schedules.yaml",
        ".env",
        f"{STATE}/reports/tv_coverage_analytics_report_1.json",
        f"{STATE}/reports/html/index.html",
    ]
    before = {f: (filled / f).read_bytes() for f in files}
    dest = tmp_path / "backups"
    done = cli("backup", "--include-secrets", "--dest", str(dest), cwd=filled)
    archive = archive_from(done)
    assert archive.parent == dest
    assert "contains secrets (.env)" in done.stdout
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = json.loads(members(archive)["MANIFEST.json"])
    assert manifest["format_version"] == backup.FORMAT_VERSION
    assert {m["name"] for m in manifest["members"]} == {
        "root/testviper.yaml",
        "root/ops/schedules.yaml",
        "root/.env",
        "state/reports/tv_coverage_analytics_report_1.json",
        "state/reports/html/index.html",
        "state/history.sqlite",
    }
    verified = cli("backup.verify", str(archive), cwd=filled)
    assert verified.returncode == 0, verified.stderr
    assert "ok (6 members verified; history: 3 runs)" in verified.stdout

    for f in ("testviper.yaml", ".env"):
        (filled / f).unlink()
    for d in ("ops", STATE):
        subprocess.run(["rm", "-rf", str(filled / d)], check=True)

    done = cli("restore", str(archive), cwd=filled)
    assert done.returncode == 0, done.stderr
    assert {f: (filled / f).read_bytes() for f in files} == before
    assert (filled / ".env").stat().st_mode & 0o777 == 0o600
    assert dump(db) == rows
    assert "history: 3 runs; last run" in done.stdout
    assert f"config {filled / 'testviper.yaml'}: valid" in done.stdout


def test_secrets_are_left_out_by_default(filled: Path, cli: Cli) -> None:
    """Without --include-secrets there is no .env in the archive, and no secret in it at all."""
    archive = archive_from(cli("backup", cwd=filled))
    assert archive.parent == filled / STATE / "backups"
    content = members(archive)
    assert "root/.env" not in content
    assert not any(b"sk-backup-secret-123" in data for data in content.values())
    assert "contains secrets" not in cli("backup", cwd=filled).stdout


def test_reports_older_than_the_window_are_left_out(filled: Path, cli: Cli) -> None:
    """Only reports modified within --reports-days go in; 0 means none."""
    old = filled / STATE / "reports" / "html" / "index.html"
    then = (datetime.now(UTC) - timedelta(days=40)).timestamp()
    os.utime(old, (then, then))
    names = set(members(archive_from(cli("backup", cwd=filled))))
    assert "state/reports/tv_coverage_analytics_report_1.json" in names
    assert "state/reports/html/index.html" not in names
    names = set(members(archive_from(cli("backup", "--reports-days", "0", cwd=filled))))
    assert not any(n.startswith("state/reports/") for n in names)


def test_backup_names_never_collide(filled: Path) -> None:
    """Two archives in the same microsecond get different names; neither is replaced."""
    settings = load(filled / "testviper.yaml")
    now = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    items = backup.collect(settings)
    dest = filled / "out"
    first = backup.write_archive(items, dest, now=now)
    second = backup.write_archive(items, dest, now=now)
    assert first.path != second.path
    assert sorted(p.name for p in dest.iterdir()) == [
        "testviper-backup-20261125T030000.000000Z-1.tar.gz",
        "testviper-backup-20261125T030000.000000Z.tar.gz",
    ]
    assert {b.path for b in backup.list_backups(dest)} == {first.path, second.path}


def test_backup_while_another_connection_writes_is_consistent(filled: Path) -> None:
    """A writer keeps storing runs of 300 tests; each snapshot holds whole runs only."""
    settings = load(filled / "testviper.yaml")
    db = filled / STATE / "history.sqlite"
    stop, first_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        history = open_history(f"sqlite:///{db}")
        try:
            i = 0
            while not stop.is_set():
                save_run(history, make_run(datetime(2026, 11, 20) + timedelta(minutes=i), 300))
                first_commit.set()
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            first_commit.set()
        finally:
            history.engine.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert first_commit.wait(60)
        made = [backup.create_backup(settings, filled / "out") for _ in range(3)]
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    for archive in made:
        verified = backup.read_archive(archive.path)
        try:
            snapshot = verified.staged[backup.HISTORY_MEMBER]
            rows = dump(snapshot)
            assert len(rows["runs"]) >= 4  # the three stored first and the writer's first
            per_run: dict[str, int] = {}
            for test in rows["tests"]:
                per_run[test[1]] = per_run.get(test[1], 0) + 1
            index = {c: i for i, c in enumerate(_columns(snapshot, "runs"))}
            for run in rows["runs"]:
                assert per_run.get(run[0], 0) == run[index["tests_total"]]
        finally:
            verified.cleanup()


def _columns(db: Path, table: str) -> list[str]:
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    finally:
        con.close()


def test_verify_reports_a_corrupt_database(filled: Path, tmp_path: Path) -> None:
    """A snapshot whose pages are damaged (but whose checksum matches) fails verify."""
    good = members(archive_from_lib(filled))
    db = bytearray(good["state/history.sqlite"])
    for page in range(4096, len(db), 4096):
        db[page : page + 8] = b"\xff" * 8  # scribble over every b-tree page header but the first
    bad = build_archive(tmp_path / "bad.tar.gz", {**good, "state/history.sqlite": bytes(db)})
    with pytest.raises(UserError, match="history database"):
        backup.verify(bad)


# -- restore: refusals and the plan ------------------------------------------------


def archive_from_lib(project: Path) -> Path:
    settings = load(project / "testviper.yaml")
    return backup.create_backup(settings, project.parent / "lib-backups").path


def build_archive(
    path: Path,
    content: dict[str, bytes],
    manifest_edit: dict[str, object] | None = None,
    extra: list[tarfile.TarInfo] | None = None,
    list_extra: bool = False,
) -> Path:
    """A tar.gz of ``content`` with a manifest computed from it (then edited), plus ``extra``."""
    import hashlib

    files = {k: v for k, v in content.items() if k != "MANIFEST.json"}
    old = json.loads(content["MANIFEST.json"]) if "MANIFEST.json" in content else {}
    kinds = {m["name"]: m["kind"] for m in old.get("members", [])}
    entries = [
        {
            "name": name,
            "kind": kinds.get(name, "config"),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "mode": 0o644,
        }
        for name, data in files.items()
    ]
    for info in extra or []:
        if list_extra:
            entries.append(
                {"name": info.name, "kind": "config", "size": 0, "sha256": "0" * 64, "mode": 0o644}
            )
    manifest = {**old, "members": entries, **(manifest_edit or {})}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def write_raw(path: Path, content: dict[str, bytes]) -> Path:
    """A tar.gz of exactly ``content`` (MANIFEST.json included as given), in order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


def _malicious(case: str, good: dict[str, bytes], path: Path) -> Path:
    if case == "traversal":
        return build_archive(path, good, extra=[_info("root/../../evil", size=4)], list_extra=True)
    if case == "absolute":
        return build_archive(path, good, extra=[_info("/tmp/tv-evil", size=4)], list_extra=True)
    if case == "symlink":
        link = _info("root/link", tarfile.SYMTYPE, "/etc/passwd")
        return build_archive(path, good, extra=[link], list_extra=True)
    if case == "hardlink":
        link = _info("root/hard", tarfile.LNKTYPE, "root/testviper.yaml")
        return build_archive(path, good, extra=[link], list_extra=True)
    if case == "device":
        return build_archive(
            path, good, extra=[_info("root/null", tarfile.CHRTYPE)], list_extra=True
        )
    if case == "misplaced":
        extra = [_info("root/evil.sh", size=4)]
        return build_archive(path, good, extra=extra, list_extra=True)
    if case == "unlisted":
        return build_archive(path, good, extra=[_info("root/extra.txt", size=4)])
    if case == "checksum":
        # the config is altered after the manifest was made: its checksum no longer matches
        config = good["root/testviper.yaml"].replace(b"calc", b"evil")
        return write_raw(path, {**good, "root/testviper.yaml": config})
    if case == "truncated":
        whole = build_archive(path, good).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
        return path
    if case == "newer":
        return build_archive(path, good, manifest_edit={"format_version": 99})
    if case == "not-a-tar":
        path.write_text("just some text, not an archive\n")
        return path
    if case == "not-gzip":
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("root/testviper.yaml")
            tar.addfile(info, io.BytesIO(b""))
        return path
    if case == "no-manifest":
        with tarfile.open(path, "w:gz") as tar:
            data = good["root/testviper.yaml"]
            info = tarfile.TarInfo("root/testviper.yaml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return path
    raise AssertionError(case)


MALICIOUS = {
    "traversal": "'..'",
    "absolute": "absolute path",
    "symlink": "symbolic link",
    "hardlink": "hard link",
    "device": "device",
    "unlisted": "not in the manifest",
    "misplaced": "refusing member 'root/evil.sh': a config file is not stored there",
    "checksum": "checksum mismatch for 'root/testviper.yaml'",
    "truncated": "truncated",
    "newer": "backup format 99 is newer",
    "not-a-tar": "not a readable backup archive",
    "not-gzip": "not a readable backup archive",
    "no-manifest": "no MANIFEST.json",
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_archive_is_refused_and_nothing_changes(
    case: str, filled: Path, cli: Cli, tmp_path: Path
) -> None:
    """Each bad archive: exit 2, one clear line, the whole tree and the temp dir unchanged."""
    good = members(archive_from_lib(filled))
    (filled / "testviper.yaml").write_text((filled / "testviper.yaml").read_text() + "# local\n")
    archive = _malicious(case, good, tmp_path / f"{case}.tar.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    before = tree_hash(filled)
    for command in (["restore", str(archive), "--force"], ["backup.verify", str(archive)]):
        done = cli(*command, cwd=filled, env=clean_env(TMPDIR=str(scratch)))
        assert_one_line_error(done, 2, MALICIOUS[case])
        assert tree_hash(filled) == before
        assert list(scratch.iterdir()) == []
    assert not Path("/tmp/tv-evil").exists()


def test_dry_run_shows_the_plan_and_changes_nothing(filled: Path, cli: Cli) -> None:
    """--dry-run lists create/replace/unchanged per file and leaves every byte alone."""
    archive = archive_from(cli("backup", cwd=filled))
    (filled / "testviper.yaml").write_text((filled / "testviper.yaml").read_text() + "# edit\n")
    (filled / "ops" / "schedules.yaml").unlink()
    before = tree_hash(filled)
    done = cli("restore", str(archive), "--dry-run", cwd=filled)
    assert done.returncode == 0, done.stderr
    assert tree_hash(filled) == before
    out = done.stdout
    assert f"replace    {filled / 'testviper.yaml'}" in out
    assert f"create     {filled / 'ops' / 'schedules.yaml'}" in out
    assert f"unchanged  {filled / STATE / 'reports' / 'html' / 'index.html'}" in out
    assert f"replace    {filled / STATE / 'history.sqlite'}" in out
    assert "1 to create, 2 to replace, 2 unchanged" in out
    assert "dry run: nothing changed; replacing existing files needs --force" in out


def test_restore_refuses_to_overwrite_without_force_then_force_keeps_a_safety_copy(
    filled: Path, cli: Cli
) -> None:
    """Existing differing files: refused (nothing changed); --force saves them first."""
    archive = archive_from(cli("backup", cwd=filled))
    config = filled / "testviper.yaml"
    original = config.read_bytes()
    edited = original + b"# edited after the backup\n"
    config.write_bytes(edited)
    db = filled / STATE / "history.sqlite"
    fill_history(db, [datetime(2026, 11, 24)])
    rows_after = dump(db)
    before = tree_hash(filled)
    done = cli("restore", str(archive), cwd=filled)
    assert_one_line_error(done, 2, "would overwrite 2 existing file(s)", "--force")
    assert tree_hash(filled) == before

    done = cli("restore", str(archive), "--force", cwd=filled)
    assert done.returncode == 0, done.stderr
    assert config.read_bytes() == original
    assert len(dump(db)["runs"]) == 3
    safety = [
        b for b in backup.list_backups(filled / STATE / "backups") if b.prefix != "testviper-backup"
    ]
    assert (
        len(safety) == 1 and f"safety backup of the replaced files: {safety[0].path}" in done.stdout
    )
    saved = backup.read_archive(safety[0].path)
    try:
        assert set(saved.members) == {"root/testviper.yaml", "state/history.sqlite"}
        assert saved.staged["root/testviper.yaml"].read_bytes() == edited
        assert dump(saved.staged["state/history.sqlite"]) == rows_after
    finally:
        saved.cleanup()


def test_restore_only_config_leaves_history_alone(filled: Path, cli: Cli) -> None:
    """--only config restores the config files and never touches the database."""
    archive = archive_from(cli("backup", cwd=filled))
    (filled / "testviper.yaml").unlink()
    db = filled / STATE / "history.sqlite"
    fill_history(db, [datetime(2026, 11, 24)])
    rows = dump(db)
    done = cli("restore", str(archive), "--only", "config", cwd=filled)
    assert done.returncode == 0, done.stderr
    assert (filled / "testviper.yaml").is_file()
    assert dump(db) == rows
    assert "history.sqlite" not in done.stdout
    bad = cli("restore", str(archive), "--only", "everything", cwd=filled)
    assert_one_line_error(bad, 2, "--only: unknown part 'everything'")


def test_restore_of_an_identical_tree_does_nothing(filled: Path, cli: Cli) -> None:
    """Files that already match are 'unchanged' and need no --force."""
    archive = archive_from(cli("backup", cwd=filled))
    before = tree_hash(filled)
    done = cli("restore", str(archive), "--only", "config,reports", cwd=filled)
    assert done.returncode == 0, done.stderr
    assert "nothing to restore" in done.stdout
    assert tree_hash(filled) == before


# -- retention ---------------------------------------------------------------------


def test_retention_on_a_400_day_series_keeps_exactly_the_expected_archives(
    tmp_path: Path,
) -> None:
    """One backup a day at 03:00 for 400 days; keep 7 daily, 4 weekly, 12 monthly."""
    start = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)
    dest = tmp_path / "archives"
    dest.mkdir()
    for day in range(400):
        when = start + timedelta(days=day)
        (dest / f"testviper-backup-{when:%Y%m%dT%H%M%S.%fZ}.tar.gz").write_bytes(b"x")
    (dest / "testviper-safety-20250101T000000.000000Z.tar.gz").write_bytes(b"x")
    (dest / "unrelated.txt").write_bytes(b"x")
    kept, removed = backup.prune(dest, Policy(daily=7, weekly=4, monthly=12))
    expected = {
        # the last 7 days (2026-02-04 is the 400th)
        *(date(2026, 1, 29) + timedelta(days=i) for i in range(7)),
        # ISO weeks ending on Sundays 01-25 and 01-18 (02-01 and 02-04 are dailies)
        date(2026, 1, 25),
        date(2026, 1, 18),
        # month ends, Mar 2025 .. Dec 2025 (Jan and Feb 2026 are dailies)
        date(2025, 3, 31),
        date(2025, 4, 30),
        date(2025, 5, 31),
        date(2025, 6, 30),
        date(2025, 7, 31),
        date(2025, 8, 31),
        date(2025, 9, 30),
        date(2025, 10, 31),
        date(2025, 11, 30),
        date(2025, 12, 31),
    }
    left = {b.created.date() for b in backup.list_backups(dest) if b.prefix == "testviper-backup"}
    assert left == expected
    assert len(kept) == 19 and len(removed) == 381
    assert (dest / "testviper-safety-20250101T000000.000000Z.tar.gz").exists()
    assert (dest / "unrelated.txt").exists()


@pytest.mark.parametrize(
    ("days", "policy", "kept"),
    [
        # newest per day only
        ([(1, 1), (1, 2), (2, 1)], Policy(daily=1), [(2, 1)]),
        ([(1, 1), (1, 2), (2, 1)], Policy(daily=2), [(2, 1), (1, 2)]),
        # counts left over: the oldest is kept as well (restic >= 0.17)
        ([(1, 1), (1, 2), (2, 1)], Policy(daily=5), [(2, 1), (1, 2), (1, 1)]),
        # weeks run Monday..Sunday: Sun 2026-01-04 and Mon 2026-01-05 are different weeks
        ([(4, 1), (5, 1), (6, 1)], Policy(weekly=1), [(6, 1)]),
        ([(4, 1), (5, 1), (6, 1)], Policy(weekly=2), [(6, 1), (4, 1)]),
        # rules are OR-ed
        ([(1, 1), (20, 1), (31, 1)], Policy(daily=1, monthly=1), [(31, 1)]),
        ([(1, 1), (3, 1)], Policy(), [(3, 1), (1, 1)]),
    ],
)
def test_select_keep_table(
    days: list[tuple[int, int]], policy: Policy, kept: list[tuple[int, int]]
) -> None:
    """restic's forget semantics on small hand-checked series (day of Jan 2026, hour)."""

    def ts(day: int, hour: int) -> datetime:
        return datetime(2026, 1, day, hour, tzinfo=UTC)

    keep, remove, reasons = select_keep([ts(*d) for d in days], policy)
    assert keep == [ts(*k) for k in kept]
    assert sorted(remove + keep) == sorted(ts(*d) for d in days)
    assert set(reasons) == set(keep)


def test_backup_applies_retention_to_its_destination(filled: Path, cli: Cli, tmp_path: Path):
    """--keep-daily 1 after a new backup leaves only today's newest archive."""
    dest = tmp_path / "bk"
    dest.mkdir()
    for day in (1, 2, 3):
        (dest / f"testviper-backup-2026010{day}T030000.000000Z.tar.gz").write_bytes(b"x")
    done = cli("backup", "--dest", str(dest), "--keep-daily", "1", cwd=filled)
    archive = archive_from(done)
    assert [p.name for p in dest.iterdir()] == [archive.name]
    assert "retention: kept 1 archives, removed 3" in done.stdout
    listed = cli("backup.list", "--dest", str(dest), cwd=filled)
    assert listed.returncode == 0 and str(archive) in listed.stdout


# -- bad input ----------------------------------------------------------------------


def test_destination_under_a_regular_file_is_a_clear_error(filled: Path, cli: Cli) -> None:
    (filled / "afile").write_text("x")
    done = cli("backup", "--dest", str(filled / "afile" / "sub"), cwd=filled)
    assert_one_line_error(done, 2, "cannot create the backup destination", "Not a directory")


def test_postgresql_history_is_not_supported_yet(project: Path, cli: Cli) -> None:
    config = project / "testviper.yaml"
    config.write_text(config.read_text() + "history:\n  url: postgresql://db.example/tv\n")
    assert_one_line_error(cli("backup", cwd=project), 2, "not supported yet", "pg_dump")
    done = cli("backup", "--no-history", cwd=project)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("what", ["history", "reports"])
def test_file_size_limit_during_backup_keeps_no_partial_archive(
    what: str, filled: Path, tmp_path: Path
) -> None:
    """A disk that fills up (RLIMIT_FSIZE here) while snapshotting the database or writing
    the archive: exit 2, one line, nothing left in the destination."""
    if what == "history":
        fill_history(filled / STATE / "history.sqlite", [datetime(2026, 11, 2)], n_tests=3000)
        args: list[str] = []
    else:
        (filled / STATE / "reports" / "big.bin").write_bytes(os.urandom(256 * 1024))
        args = ["--no-history"]
    dest = tmp_path / "full"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))

    done = subprocess.run(
        [str(BIN / "testviper"), "backup", "--dest", str(dest), *args],
        cwd=filled,
        env=clean_env(),
        capture_output=True,
        text=True,
        preexec_fn=limit,
        check=False,
    )
    expected = "cannot snapshot the history database" if what == "history" else "File too large"
    assert_one_line_error(done, 2, expected, str(dest))
    assert list(dest.iterdir()) == []


def test_missing_archive_is_a_clear_error(filled: Path, cli: Cli) -> None:
    done = cli("restore", str(filled / "nope.tar.gz"), cwd=filled)
    assert_one_line_error(done, 2, "no such backup archive")


# -- locks --------------------------------------------------------------------------


def test_second_backup_while_the_lock_is_held_exits_75(filled: Path, cli: Cli) -> None:
    """The holder's pid is named; nothing is written by the refused run."""
    state = filled / STATE
    with job_lock(state, "backup"):
        done = cli("backup", cwd=filled)
        assert_one_line_error(
            done, 75, f"another backup run holds the lock (pid {os.getpid()} since"
        )
        assert not (state / "backups").exists()
    assert cli("backup", cwd=filled).returncode == 0


def test_lock_in_the_same_process_is_exclusive_and_released(tmp_path: Path) -> None:
    with job_lock(tmp_path, "cleanup"):
        with (
            pytest.raises(LockHeld, match="another cleanup run holds the lock"),
            job_lock(tmp_path, "cleanup"),
        ):
            pass  # pragma: no cover
        with job_lock(tmp_path, "backup"):  # another task's lock is independent
            pass
    with job_lock(tmp_path, "cleanup"):
        pass


def test_lock_of_a_killed_process_never_blocks(tmp_path: Path) -> None:
    """kill -9 the holder: the kernel drops the flock, the next run proceeds."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from testviper.ops.locks import job_lock\n"
        "with job_lock(Path(sys.argv[1]), 'backup'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        with pytest.raises(LockHeld, match=f"pid {proc.pid}"), job_lock(tmp_path, "backup"):
            pass  # pragma: no cover
    finally:
        proc.kill()
        proc.wait()
    with job_lock(tmp_path, "backup"):
        pass


def test_gzip_archive_is_a_real_gzip(filled: Path) -> None:
    """The archive is plain gzip'd tar: `tar xzf` and gzip tools read it."""
    archive = archive_from_lib(filled)
    with gzip.open(archive) as handle, tarfile.open(fileobj=handle) as tar:
        assert tar.getnames()[-1] == "MANIFEST.json"


def test_restore_interrupted_mid_file_leaves_the_old_file_whole(
    filled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore stopped while copying a file: the target keeps its old bytes, no temp left."""
    from testviper.ops import restore

    archive = archive_from_lib(filled)
    config = filled / "testviper.yaml"
    old = config.read_bytes() + b"# local edit\n"
    config.write_bytes(old)
    verified = backup.read_archive(archive)

    def torn_copy(src: object, dst: object, length: int = 0) -> None:
        dst.write(src.read(10))  # type: ignore[attr-defined]
        raise KeyboardInterrupt  # the process is stopped here

    try:
        plan = restore.plan_restore(verified, str(config), "config")
        assert [a.op for a in plan.actions if a.target == config] == ["replace"]
        monkeypatch.setattr(restore.shutil, "copyfileobj", torn_copy)
        with pytest.raises(KeyboardInterrupt):
            restore.execute(plan, force=True)
    finally:
        verified.cleanup()
    assert config.read_bytes() == old
    assert [p.name for p in filled.iterdir() if p.name.endswith(".tmp")] == []


def test_restore_into_an_empty_directory_warns_about_missing_sources(
    filled: Path, cli: Cli, tmp_path: Path
) -> None:
    """Disaster recovery before the code is checked out: restored, exit 0, one warning."""
    archive = archive_from(cli("backup", "--dest", str(tmp_path / "bk"), cwd=filled))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    done = cli("restore", str(archive), cwd=fresh)
    assert done.returncode == 0, done.stderr
    assert (fresh / "testviper.yaml").read_bytes() == (filled / "testviper.yaml").read_bytes()
    assert dump(fresh / STATE / "history.sqlite") == dump(filled / STATE / "history.sqlite")
    assert done.stderr.startswith("testviper: warning: restored config: ")
    assert "components.arith.source[0]: no such file 'src/calc/arith.py'" in done.stderr
