"""ReportPortal delivery cost: ``testviper run`` to 2 instances vs plain pytest and the agent.

Test RP servers (``tests/rp_server.py``, 2 ms latency per request) run in their own
processes, so serving requests does not steal this script's or the runner's CPU any more
than a remote server would steal the client's.

1. On the generated 2,000-test suite (``gen_suite.py``), median of ``--rounds``:
   ``testviper run`` delivering to 2 instances (it streams while the tests run, the
   default), ``testviper run --no-live`` delivering after the tests, ``python -m pytest
   --cov=benchpkg --cov-branch`` (the issue's "plain ``python -m pytest --cov``": pytest's default
   output, as ``testviper run`` shows it), and the official agent ``python -m pytest
   --cov=benchpkg --cov-branch --reportportal`` to 1 instance (its default synchronous
   client, directory and code hierarchy on, like TestViper's tree). Coverage is on for
   the agent too: the comparison is between two ways to get the same results and
   coverage into RP. The commands take turns, in reversed order every other round.
   Every timed delivery is checked: the newest launch on each server is finished and
   holds all the tests.
2. ``testviper sync`` replaying a stored 10,000-test run (``gen_journal.py``, ingested
   with ``testviper runs.ingest``) to 2 instances: the run is first delivered while both
   servers are down (so both outbox entries are pending, as after an outage), then the
   servers come up and ``sync`` is timed. Median of ``--rounds``, fresh servers each.
3. Peak RSS of the ``testviper sync`` process (psutil samples every 5 ms, and the kernel's
   ``ru_maxrss`` for the process when it is reaped; the larger is reported).

Targets (issue 4): ``testviper run`` <= 1.10 x plain pytest (``--no-live`` is reported
too) and faster than the agent; sync <= 5 s; peak RSS of delivery <= 120 MB. Every
figure is printed with the load average, since the machine may be shared.

Usage::

    python benchmarks/bench_delivery.py [--rounds 5] [--latency 0.002] [--keep]
                                        [--skip-run | --skip-sync]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml
from _timing import REPO_ROOT, bench_env, median, venv_bin, work_dir
from bench_ingest import make_run_dir
from gen_suite import generate_suite

RUN_RATIO, SYNC_SECONDS, RSS_MB = 1.10, 5.0, 120.0
KEY = "bench-key-5e1d7c3a9b"
PROJECT = "proj"
SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
from rp_server import RPServer
rp = RPServer(api_keys={sys.argv[2]}, projects={"proj"}, port=int(sys.argv[3]),
              latency=float(sys.argv[4]), record_bodies=False)
rp.start()
print("ready", rp.port, flush=True)
sys.stdin.read()
rp.stop()
"""


class Failed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A test RP server in its own process, on a fixed port (restartable, fresh state)."""

    def __init__(self, latency: float) -> None:
        self.port, self.latency = free_port(), latency
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        server_args = [str(REPO_ROOT / "tests"), KEY, str(self.port), str(self.latency)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, *server_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise Failed(f"test RP server on port {self.port} did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def cpu(self) -> float:
        """CPU seconds the server process has used since it started."""
        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def newest_launch(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/v1/{PROJECT}/launch?page.page=1&page.size=1&page.sort=startTime,desc",
            headers={"Authorization": f"Bearer {KEY}"},
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            content = json.loads(resp.read())["content"]
        if not content:
            raise Failed(f"no launch on {self.url}")
        return content[0]

    def expect(self, tests: int, launches: int | None = None) -> None:
        launch = self.newest_launch()
        total = launch["statistics"]["executions"].get("total")
        if launch["status"] == "IN_PROGRESS" or total != tests:
            raise Failed(
                f"{self.url}: newest launch is {launch['status']} with {total} tests, "
                f"expected a finished launch of {tests}"
            )


def load() -> str:
    """The 1-minute load average: the machine is shared, figures need their context."""
    return f"{os.getloadavg()[0]:.2f}"


def run(cmd: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise Failed(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return proc.stdout + proc.stderr


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = run(cmd, cwd, env)
    return time.perf_counter() - started, out


def peak_rss(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, str]:
    """Wall time, peak RSS in MB (psutil samples and the kernel's ru_maxrss), CPU s, output."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.append(proc.stdout.read()), daemon=True)
    reader.start()
    sampled = 0
    ps = psutil.Process(proc.pid)
    while True:
        try:
            sampled = max(sampled, ps.memory_info().rss)
        except psutil.Error:
            break
        if ps.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.005)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    text = "".join(output)
    if proc.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-3000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return elapsed, max(sampled / 2**20, usage.ru_maxrss / 1024), cpu, text


def configure(root: Path, servers: list[Server]) -> None:
    path = root / "testviper.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    data["reportportal"] = {
        "instances": [
            {"name": f"rp{i}", "endpoint": s.url, "project": PROJECT, "timeout": 30}
            for i, s in enumerate(servers)
        ]
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def bench_run(args: argparse.Namespace, work: Path, env: dict[str, str]) -> dict[str, float]:
    suite = work / "suite"
    generate_suite(suite, args.modules, args.tests_per_module)
    total = args.modules * args.tests_per_module
    servers = [Server(args.latency).start() for _ in range(2)]
    agent_server = Server(args.latency).start()
    try:
        configure(suite, servers)
        cov = ["--cov=benchpkg", "--cov-branch"]
        commands = {
            "testviper_run": [str(venv_bin("testviper")), "run"],
            "testviper_after": [str(venv_bin("testviper")), "run", "--no-live"],
            "pytest_cov": [sys.executable, "-m", "pytest", *cov],
            "agent": [
                *(sys.executable, "-m", "pytest", *cov, "-p", "no:cacheprovider"),
                *("--reportportal", f"--rp-endpoint={agent_server.url}"),
                *(f"--rp-project={PROJECT}", "--rp-launch=bench-agent"),
                *("-o", "rp_hierarchy_dirs=True", "-o", "rp_hierarchy_code=True"),
            ],
        }
        print(f"generated {total} tests in {suite}; servers at 2 x {args.latency * 1000:g} ms")
        times: dict[str, list[float]] = {label: [] for label in commands}
        for round_no in range(args.rounds + 1):  # round 0 is the warm-up
            order = list(commands) if round_no % 2 == 0 else list(reversed(commands))
            for label in order:
                elapsed, out = timed(commands[label], suite, env)
                if label.startswith("testviper"):
                    for i in range(len(servers)):
                        if f"delivered to rp{i}:" not in out:
                            raise Failed(f"testviper run did not deliver to rp{i}:\n{out[-2000:]}")
                    for server in servers:
                        server.expect(total)
                elif label == "agent":
                    agent_server.expect(total)
                name = "warm-up" if round_no == 0 else f"round {round_no}/{args.rounds}"
                print(f"{name} {label}: {elapsed:.2f}s (load {load()})", flush=True)
                if round_no:
                    times[label].append(elapsed)
    finally:
        for server in (*servers, agent_server):
            server.stop()
    return {label: median(values) for label, values in times.items()}


def bench_sync(args: argparse.Namespace, work: Path, env: dict[str, str]) -> tuple[float, float]:
    root = work / "replay"
    root.mkdir()
    run_dir = make_run_dir(root, args.journal_tests, 300)
    servers = [Server(args.latency) for _ in range(2)]
    configure(root, servers)
    run([str(venv_bin("testviper")), "runs.ingest", str(run_dir)], root, env, ok=(0, 1))
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    # The outage: both servers down, no retries, so both entries wait in the outbox.
    outage = (
        "import sys; from pathlib import Path; from testviper.config import load;"
        "from testviper.reporter.deliver import deliver_all;"
        "s = load(check_paths=False);"
        "[setattr(i, 'retries', 0) for i in s.config.reportportal.instances];"
        "r = deliver_all(s, sys.argv[1], Path(sys.argv[2]));"
        "sys.exit(0 if all(x.status == 'pending' for x in r) and len(r) == 2 else 1)"
    )
    sync_cmd = [str(venv_bin("testviper")), "sync"]
    times, rss = [], []
    for round_no in range(args.rounds):
        run([sys.executable, "-c", outage, run_id, str(run_dir)], root, env)
        for server in servers:
            server.start()
        try:
            elapsed, peak, cpu, out = peak_rss(sync_cmd, root, env)
            if out.count("delivered run") != 2:
                raise Failed(f"testviper sync did not deliver both entries:\n{out[-2000:]}")
            for server in servers:
                server.expect(args.journal_tests)
            served = [server.cpu() for server in servers]
        finally:
            for server in servers:
                server.stop()
        times.append(elapsed)
        rss.append(peak)
        print(
            f"round {round_no + 1}/{args.rounds} sync of {args.journal_tests} tests to 2 "
            f"instances: {elapsed:.2f}s (sync process CPU {cpu:.2f}s, test servers "
            f"{' + '.join(f'{c:.2f}' for c in served)}s on the same cores), "
            f"peak RSS {peak:.0f} MB (load {load()})",
            flush=True,
        )
    return median(times), max(rss)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every target holds, 1 if one is missed, 2 if a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.002, help="seconds per request")
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--tests-per-module", type=int, default=50)
    parser.add_argument("--journal-tests", type=int, default=10_000)
    parser.add_argument("--skip-run", action="store_true", help="only the sync replay")
    parser.add_argument("--skip-sync", action="store_true", help="only the run comparison")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    env = bench_env() | {"RP_API_KEY": KEY}
    with work_dir("testviper-bench-delivery-", args.keep) as work:
        ok = True
        try:
            if not args.skip_run:
                med = bench_run(args, work, env)
                ratio = med["testviper_run"] / med["pytest_cov"]
                after = med["testviper_after"] / med["pytest_cov"]
                vs_agent = med["testviper_run"] / med["agent"]
                run_ok = ratio <= RUN_RATIO and vs_agent < 1
                ok &= run_ok
                print(
                    f"RESULT delivery run_vs_pytest ratio={ratio:.2f} (target <= {RUN_RATIO}) "
                    f"run_no_live_vs_pytest ratio={after:.2f} "
                    f"run_vs_agent ratio={vs_agent:.2f} (target < 1.00) "
                    f"testviper_run_median={med['testviper_run']:.2f}s "
                    f"testviper_no_live_median={med['testviper_after']:.2f}s "
                    f"pytest_cov_median={med['pytest_cov']:.2f}s agent_median={med['agent']:.2f}s "
                    f"load={load()} {'PASS' if run_ok else 'FAIL'}"
                )
            if args.skip_sync:
                return 0 if ok else 1
            sync_time, rss = bench_sync(args, work, env)
            sync_ok, rss_ok = sync_time <= SYNC_SECONDS, rss <= RSS_MB
            ok &= sync_ok and rss_ok
            print(
                f"RESULT delivery sync_seconds={sync_time:.2f} (target <= {SYNC_SECONDS:g}) "
                f"tests={args.journal_tests} instances=2 load={load()} "
                f"{'PASS' if sync_ok else 'FAIL'}"
            )
            print(
                f"RESULT delivery peak_rss_mb={rss:.0f} (target <= {RSS_MB:g}) "
                f"{'PASS' if rss_ok else 'FAIL'}"
            )
        except Failed as exc:
            print(f"ERROR {exc}", file=sys.stderr)
            print("RESULT delivery ERROR (a command failed, see above)")
            return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
