"""``inv profile``: the run of ``inv run`` under psutil sampling, stored and compared."""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Cli, clean_env, write_files

from testviper.ops import profile as prof

MB = 1024 * 1024
ALLOC_MB = 200

MEMORY_TEST = {
    # The size comes from the environment so that both runs have the same target.
    "tests/mem/test_mem.py": """
        import os
        import time


        def test_hold_memory():
            size = int(os.environ.get("PROFILE_TEST_MB", "0")) * 1024 * 1024
            block = b"x" * size  # bytes() writes every page: all of it is resident
            time.sleep(1.0)
            assert len(block) == size
    """,
}


def profiles(project: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(project / ".testviper" / "history.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM profiles ORDER BY id").fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_profile_measures_known_allocation_and_warns_on_growth(project: Path, cli: Cli) -> None:
    """Peak RSS grows by the allocated 200 MB (within 10 %); growth warns, exit is pytest's."""
    write_files(project, MEMORY_TEST)
    base = cli("profile", "--", "tests/mem", "-q", cwd=project, env=clean_env(PROFILE_TEST_MB="0"))
    assert base.returncode == 0, base.stderr
    assert "no previous profile of this target" in base.stdout
    assert "testviper: warning" not in base.stderr

    big = cli(
        "profile",
        "--",
        "tests/mem",
        "-q",
        cwd=project,
        env=clean_env(PROFILE_TEST_MB=str(ALLOC_MB)),
    )
    assert big.returncode == 0, big.stderr
    rows = profiles(project)
    assert [r["target"] for r in rows] == ["tests/mem -q", "tests/mem -q"]
    first, second = rows
    grown = second["peak_rss"] - first["peak_rss"]
    assert abs(grown - ALLOC_MB * MB) <= 0.10 * ALLOC_MB * MB, (
        first["peak_rss"],
        second["peak_rss"],
    )

    # Each profile belongs to its run, and the second is printed beside the first.
    run_ids = {
        line.split()[2]
        for line in (base.stdout + big.stdout).splitlines()
        if line.startswith("TestViper run ")
    }
    assert {first["run_id"], second["run_id"]} == run_ids
    assert f"run {first['run_id']})" in big.stdout
    assert "peak RSS" in big.stdout and "previous" in big.stdout
    for column in ("wall", "cpu_mean", "cpu_peak", "children"):
        assert second[column] is not None, column
    assert second["wall"] >= 1.0  # the test sleeps 1 s
    warning = [line for line in big.stderr.splitlines() if "peak RSS grew" in line]
    assert len(warning) == 1 and warning[0].startswith("testviper: warning: "), big.stderr
    assert "--limit-rss-growth 20%" in warning[0]

    # A looser limit: no warning.
    again = cli(
        "profile",
        "--limit-rss-growth",
        "1000",
        "--limit-wall-growth",
        "1000",
        "--",
        "tests/mem",
        "-q",
        cwd=project,
        env=clean_env(PROFILE_TEST_MB="0"),
    )
    assert again.returncode == 0, again.stderr
    assert "testviper: warning" not in again.stderr
    assert len(profiles(project)) == 3


@pytest.mark.slow
def test_profile_exit_code_is_pytests(project: Path, cli: Cli) -> None:
    """A failing test: exit 1 as `inv run`, and the profile is still stored."""
    write_files(project, {"tests/test_fail.py": "def test_fail():\n    assert False\n"})
    done = cli("profile", "--no-cov", "--", "tests/test_fail.py", cwd=project)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (row,) = profiles(project)
    assert row["target"] == "tests/test_fail.py"


def test_sampler_counts_the_whole_tree() -> None:
    """Children are counted and their memory summed; I/O counters are read where available."""
    code = textwrap.dedent(
        """
        import subprocess, sys
        kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
                for _ in range(2)]
        for k in kids:
            k.wait()
        """
    )
    sampler = prof.Sampler(interval=0.05)
    proc = subprocess.Popen([sys.executable, "-c", code])
    stop = sampler(proc)
    proc.wait()
    stop()
    figures = sampler.profile("t")
    assert figures.children == 2
    assert figures.peak_rss is not None and figures.peak_rss > 3 * MB
    assert figures.wall > 0
    assert figures.cpu_mean is not None and figures.cpu_peak is not None
    assert figures.cpu_peak >= figures.cpu_mean >= 0


def test_sampler_on_process_already_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    sampler = prof.Sampler()
    stop = sampler(proc)
    stop()
    assert sampler.profile("t").peak_rss is None


def test_growth_warnings() -> None:
    old = prof.Profile(target="t", wall=10.0, peak_rss=100 * MB)
    assert prof.warnings(old, None, 20, 20) == []
    same = prof.Profile(target="t", wall=11.0, peak_rss=119 * MB)
    assert prof.warnings(same, old, 20, 20) == []
    worse = prof.Profile(target="t", wall=13.0, peak_rss=130 * MB)
    lines = prof.warnings(worse, old, 20, 20)
    assert lines[0].startswith("peak RSS grew 30% (100.0 MB -> 130.0 MB)")
    assert lines[1].startswith("wall time grew 30% (10.00s -> 13.00s)")
    unknown = prof.Profile(target="t", wall=13.0, peak_rss=None)
    assert len(prof.warnings(unknown, old, 20, 20)) == 1


def test_target_keeps_quoting() -> None:
    assert prof.target_of(["tests", "-k", "a and b"]) == "tests -k 'a and b'"
    assert "(default test paths)" in prof.format_profile(prof.Profile(target="", wall=1.0), None)
