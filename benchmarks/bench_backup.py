"""``testviper backup`` / ``restore`` of a ~200 MB history against plain ``tar``.

A project with a config and a generated history database (SQLite, about 200 MB of
runs, tests with failure messages and logs, file coverage) is backed up with
``testviper backup`` and with ``tar czf`` of the same files, then restored with
``testviper restore`` into a wiped project and with ``tar xzf`` into an empty
directory. TestViper does more (an online-backup snapshot of the database, SHA-256
of every member, a manifest; on restore the full verification, integrity check and
a transactional database write), so the targets are ratios, not parity.

Targets: backup <= 1.5 x tar czf; restore <= 2 x tar xzf (ratio of medians).

Usage::

    python benchmarks/bench_backup.py [--rounds 3] [--mb 200] [--keep]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
from datetime import datetime, timedelta
from pathlib import Path

from _timing import CommandFailed, bench_env, median, time_command, venv_bin, work_dir

BACKUP_TARGET = 1.5
RESTORE_TARGET = 2.0
CONFIG = """project:
  name: benchproj
coverage:
  source: [src]
"""


def _words(rng: random.Random, n: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz_"
    return ["".join(rng.choices(letters, k=rng.randint(3, 12))) for _ in range(n)]


def generate_history(db: Path, megabytes: int, seed: int = 0) -> None:
    """Write a history database of about ``megabytes`` MB with the real schema."""
    from testviper.history.store import open_history

    open_history(f"sqlite:///{db}").engine.dispose()  # the current schema, migrated
    rng = random.Random(seed)
    vocab = _words(rng, 3000)
    messages = [
        "AssertionError: " + " ".join(rng.choices(vocab, k=rng.randint(60, 200)))
        for _ in range(4000)
    ]
    logs = ["\n".join(" ".join(rng.choices(vocab, k=12)) for _ in range(8)) for _ in range(2000)]
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    start = datetime(2026, 1, 1)
    tests_per_run, files_per_run = 1000, 200
    run = 0
    while db.stat().st_size < megabytes * 1_000_000:
        run_id = f"019b{run:04x}-0000-7000-8000-{run:012x}"
        when = start + timedelta(hours=run)
        with con:
            con.execute(
                "INSERT INTO runs (id, project, status, exit_code, started_at, finished_at,"
                " duration, tests_total, passed, failed, errors, skipped, xfailed, xpassed,"
                " cov_percent, ingested_at, command, run_dir)"
                " VALUES (?, 'benchproj', 'complete', 1, ?, ?, 60.0, ?, ?, 100, 0, 0, 0, 0,"
                " 81.5, ?, '[]', '/r')",
                (run_id, when, when, tests_per_run, tests_per_run - 100, when),
            )
            con.executemany(
                "INSERT INTO tests (run_id, nodeid, outcome, phase, duration, message, log)"
                " VALUES (?, ?, ?, 'call', ?, ?, ?)",
                [
                    (
                        run_id,
                        f"tests/test_mod_{i % 40:02d}.py::test_case_{i}",
                        "failed" if i % 10 == 0 else "passed",
                        rng.random(),
                        rng.choice(messages) if i % 10 == 0 or i % 3 == 0 else None,
                        rng.choice(logs) if i % 4 == 0 else None,
                    )
                    for i in range(tests_per_run)
                ],
            )
            con.executemany(
                "INSERT INTO file_coverage (run_id, path, statements, missing, excluded,"
                " branches, covered_branches, percent, executed_lines, missing_lines)"
                " VALUES (?, ?, 200, 20, 0, 40, 30, 85.0, ?, ?)",
                [
                    (
                        run_id,
                        f"src/pkg/module_{f:03d}.py",
                        ",".join(f"{a}-{a + rng.randint(1, 9)}" for a in range(1, 400, 11)),
                        ",".join(str(rng.randint(1, 400)) for _ in range(15)),
                    )
                    for f in range(files_per_run)
                ],
            )
        run += 1
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200, help="size of the history database")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    with work_dir("tv-bench-backup-", args.keep) as work:
        project = work / "proj"
        (project / "src").mkdir(parents=True)
        (project / "testviper.yaml").write_text(CONFIG)
        db = project / ".testviper" / "history.sqlite"
        db.parent.mkdir()
        print(f"generating a {args.mb} MB history in {db} ...", flush=True)
        generate_history(db, args.mb)
        size = db.stat().st_size
        print(f"history: {size / 1e6:.0f} MB")

        tv, env = str(venv_bin("testviper")), bench_env()
        files = ["testviper.yaml", ".testviper/history.sqlite"]
        out = work / "out"
        out.mkdir()
        times: dict[str, list[float]] = {k: [] for k in ("tar_c", "backup", "tar_x", "restore")}
        try:
            for n in range(args.rounds + 1):  # round 0 is the warm-up
                for p in out.iterdir():
                    p.unlink()
                t_tar_c = time_command(["tar", "czf", out / "plain.tar.gz", *files], project, env)
                t_backup = time_command([tv, "backup", "--dest", out], project, env)
                archive = next(out.glob("testviper-backup-*.tar.gz"))

                extract = work / "extract"
                shutil.rmtree(extract, ignore_errors=True)
                extract.mkdir()
                t_tar_x = time_command(["tar", "xzf", out / "plain.tar.gz"], extract, env)

                restored = work / "restored"
                shutil.rmtree(restored, ignore_errors=True)
                restored.mkdir()
                t_restore = time_command([tv, "restore", archive], restored, env)
                same = (restored / "testviper.yaml").read_bytes() == (
                    project / "testviper.yaml"
                ).read_bytes()
                if not same:
                    raise CommandFailed("restored config differs from the original")
                label = "warm-up" if n == 0 else f"round {n}/{args.rounds}"
                print(
                    f"{label}: tar czf {t_tar_c:.2f}s backup {t_backup:.2f}s | "
                    f"tar xzf {t_tar_x:.2f}s restore {t_restore:.2f}s",
                    flush=True,
                )
                if n:
                    for key, value in zip(
                        times, (t_tar_c, t_backup, t_tar_x, t_restore), strict=True
                    ):
                        times[key].append(value)
        except CommandFailed as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            print("RESULT backup_vs_tar ERROR (a command failed, see above)")
            return 2

    m = {k: median(v) for k, v in times.items()}
    backup_ratio = m["backup"] / m["tar_c"]
    restore_ratio = m["restore"] / m["tar_x"]
    ok = backup_ratio <= BACKUP_TARGET and restore_ratio <= RESTORE_TARGET
    print(
        f"RESULT backup_vs_tar ratio={backup_ratio:.2f} (target <= {BACKUP_TARGET}) "
        f"restore_vs_tar ratio={restore_ratio:.2f} (target <= {RESTORE_TARGET}) "
        f"db={size / 1e6:.0f}MB backup_median={m['backup']:.2f}s tar_czf_median={m['tar_c']:.2f}s "
        f"restore_median={m['restore']:.2f}s tar_xzf_median={m['tar_x']:.2f}s "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
