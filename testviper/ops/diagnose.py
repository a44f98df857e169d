"""``inv diagnose``: everything ``inv health`` checks, and what an admin looks at next.

Installed dependency versions against the ranges the package declares, the environment
variables that matter (values never shown), permissions of ``.env`` and the config file,
the coverage source directories, which component a test path maps to, and a timed
connection trace per ReportPortal instance (DNS, TCP, TLS, HTTP, auth). Every problem
comes with a one-line fix. Same Check/Report model and exit codes as ``health``.
"""

import http.client
import os
import queue
import re
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from testviper.ops.health import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    Check,
    Report,
    guarded,
    health_checks,
    instance_check,
    load_settings,
)

ENV_PREFIXES = ("RP_", "TV_", "TESTVIPER_")
T = TypeVar("T")


# --------------------------------------------------------------------------- dependencies


@dataclass
class Requirement:
    name: str
    spec: str
    satisfied: Callable[[str], bool]


def _requirements(dist: str = "testviper") -> list[Requirement]:
    """The unconditional requirements of ``dist`` (extras and foreign markers left out)."""
    from importlib.metadata import requires

    out = []
    for line in requires(dist) or []:
        parsed = _parse_requirement(line)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_requirement(line: str) -> Requirement | None:
    try:
        from packaging.requirements import Requirement as PkgRequirement
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return _parse_simple(line)
    req = PkgRequirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None

    def satisfied(version: str) -> bool:
        try:
            return req.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False

    return Requirement(req.name, str(req.specifier), satisfied)


SIMPLE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;(.*))?$")
OPS = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
}


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+")[0])[:4])


def _parse_simple(line: str) -> Requirement | None:
    """Without ``packaging``: plain comparisons on the numeric parts of versions."""
    found = SIMPLE.match(line)
    if not found or (found.group(3) and "extra" in found.group(3)):
        return None
    name, spec = found.group(1), found.group(2).strip("() ")
    clauses = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        op = next((o for o in (">=", "<=", "==", "!=", ">", "<") if part.startswith(o)), None)
        if op is None or "*" in part:
            continue
        clauses.append((OPS[op], _numbers(part[len(op) :])))

    def satisfied(version: str) -> bool:
        have = _numbers(version)
        return all(test(have, want) for test, want in clauses)

    return Requirement(name, spec, satisfied)


def check_dependencies() -> Check:
    """Each declared dependency installed, in the declared range."""
    from importlib.metadata import PackageNotFoundError, version

    details, missing, wrong = [], [], []
    for req in _requirements():
        try:
            have = version(req.name)
        except PackageNotFoundError:
            missing.append(f"{req.name}{req.spec}")
            details.append(f"{req.name}: NOT INSTALLED (wants {req.spec})")
            continue
        if req.satisfied(have):
            details.append(f"{req.name} {have} ({req.spec})")
        else:
            wrong.append(f"{req.name}{req.spec}")
            details.append(f"{req.name} {have}: OUTSIDE {req.spec}")
    try:
        own = version("testviper")
    except PackageNotFoundError:
        own = "?"
    needed = " ".join(f"'{r}'" for r in missing + wrong)
    fix = f"pip install {needed}" if needed else None
    if missing:
        text = f"missing: {', '.join(missing)}"
        return Check("dependencies", CRITICAL, text, details, fix)
    if wrong:
        return Check(
            "dependencies", WARNING, f"outside the pinned range: {', '.join(wrong)}", details, fix
        )
    return Check(
        "dependencies", OK, f"testviper {own}: {len(details)} dependencies in range", details
    )


# --------------------------------------------------------------------------- environment


def mask_value(value: str) -> str:
    return f"set ({len(value)} chars)"


def check_environment(settings: Any) -> Check:
    """RP_*, TV_*, TESTVIPER_* and every configured key variable; values masked."""
    names = {n for n in os.environ if n.startswith(ENV_PREFIXES)}
    names |= {n for n in settings.dotenv if n.startswith(ENV_PREFIXES)}
    key_vars = {i.api_key_env: i for i in settings.config.reportportal.instances}
    names |= set(key_vars)
    details, unset = [], []
    for name in sorted(names):
        if os.environ.get(name):
            details.append(f"{name}: {mask_value(os.environ[name])} (environment)")
        elif settings.dotenv.get(name):
            details.append(f"{name}: {mask_value(settings.dotenv[name])} (.env)")
        else:
            details.append(f"{name}: not set")
            inst = key_vars.get(name)
            if inst is not None and inst.enabled:
                unset.append((name, inst.name))
    for what, source in sorted(settings.overrides.items()):
        details.append(f"{what} overridden by {source}")
    if unset:
        name, inst = unset[0]
        text = ", ".join(f"{n} (key of instance {i})" for n, i in unset) + " not set"
        fix = f"export {name}=<key> or add `{name}=<key>` to {settings.root / '.env'} (mode 0600)"
        return Check("environment", CRITICAL, text, details, fix)
    return Check("environment", OK, f"{len(names)} relevant variables", details)


# --------------------------------------------------------------------------- permissions


def _shown(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def check_permissions(settings: Any) -> Check:
    """``.env`` (and the config file) must not be readable by group or others."""
    files = [settings.root / ".env"]
    if settings.path is not None:
        files.append(settings.path)
    details, loose = [], []
    for path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            details.append(f"{_shown(path)}: absent")
            continue
        open_to = [
            w for w, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit
        ]
        if open_to:
            loose.append(path)
            details.append(f"{_shown(path)}: mode {mode:04o}, readable by {' and '.join(open_to)}")
        else:
            details.append(f"{_shown(path)}: mode {mode:04o}")
    if loose:
        text = ", ".join(f"{_shown(p)} is group/world readable" for p in loose)
        fix = "chmod 600 " + " ".join(_shown(p) for p in loose)
        return Check("permissions", WARNING, text, details, fix)
    return Check("permissions", OK, "secrets and config readable by their owner only", details)


# --------------------------------------------------------------------------- coverage sources


def check_sources(settings: Any) -> Check:
    """coverage.source and each component's source exist."""
    from testviper.config import GLOB_CHARS

    details, missing = [], []
    entries = [("coverage.source", e) for e in settings.config.coverage.source]
    for name, comp in settings.config.components.items():
        entries += [(f"components.{name}.source", e) for e in comp.source]
    for where, entry in entries:
        if GLOB_CHARS.search(entry):
            hits = list(settings.root.glob(entry))
            details.append(f"{where}: {entry} ({len(hits)} matches)")
            if not hits:
                missing.append((where, entry))
            continue
        path = settings.resolve(entry)
        if path.exists():
            details.append(f"{where}: {entry} ({'directory' if path.is_dir() else 'file'})")
        elif where == "coverage.source" and "/" not in entry and not entry.startswith("."):
            details.append(f"{where}: {entry} (no such directory: taken as a package name)")
        else:
            missing.append((where, entry))
            details.append(f"{where}: {entry}: MISSING under {settings.root}")
    if missing:
        where, entry = missing[0]
        text = ", ".join(f"{w}: '{e}'" for w, e in missing) + " not found"
        fix = f"create {settings.root / entry} or fix {where} in {settings.source}"
        return Check("coverage_sources", CRITICAL, text, details, fix)
    return Check("coverage_sources", OK, f"{len(entries)} source entries exist", details)


# --------------------------------------------------------------------------- --path


def check_path(settings: Any, test_path: str) -> Check:
    """Which component a test path maps to."""
    from testviper.config import component_of

    component = component_of(settings, test_path)
    on_disk = (settings.root / test_path.split("::", 1)[0]).exists() or Path(
        test_path.split("::", 1)[0]
    ).exists()
    details = [] if on_disk else [f"{test_path}: no such file or directory (mapped by name only)"]
    if settings.label:
        details.append(f"run label overridden by TV_COMPONENT_NAME: {settings.label}")
    if component is None:
        names = ", ".join(settings.config.components) or "none defined"
        return Check(
            "path",
            WARNING,
            f"{test_path} maps to no component (components: {names})",
            details,
            fix=f"add '{test_path}' (or its directory) to `components.<name>.tests` "
            f"in {settings.path or settings.root / 'testviper.yaml'}",
        )
    return Check("path", OK, f"{test_path} -> component {component}", details)


# --------------------------------------------------------------------------- connection trace


@dataclass
class Step:
    name: str
    ok: bool
    ms: float
    detail: str

    def line(self) -> str:
        return f"{self.name:<5} {'ok  ' if self.ok else 'FAIL'} {self.ms:7.1f} ms  {self.detail}"


def _in_thread(func: Callable[[], T], timeout: float) -> T:
    """``func()`` in a daemon thread, abandoned after ``timeout`` (getaddrinfo has none)."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(1)

    def target() -> None:
        try:
            box.put((True, func()))
        except BaseException as exc:
            box.put((False, exc))

    threading.Thread(target=target, daemon=True, name="tv-dns").start()
    try:
        ok, value = box.get(timeout=timeout)
    except queue.Empty:
        raise TimeoutError(f"no answer within {timeout:g} s") from None
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def trace_instance(instance: Any, timeout: float | None = None) -> tuple[list[Step], str | None]:
    """DNS, TCP, TLS and HTTP steps to ``/api/info``, each timed and bounded.

    Returns the steps and the fix for the first failing one (None if all passed). The
    whole trace finishes within ``timeout`` (default: the instance's) plus slack.
    """
    limit = timeout if timeout is not None else instance.timeout
    deadline = time.monotonic() + limit
    parts = urlsplit(instance.endpoint)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    steps: list[Step] = []

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    def step(name: str, func: Callable[[], tuple[Any, str]]) -> Any:
        started, budget = time.perf_counter(), left()
        try:
            value, detail = func()
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError | socket.timeout) and "within" not in text:
                text = f"no answer within {budget:.1f} s ({text})"
            steps.append(Step(name, False, (time.perf_counter() - started) * 1000, text))
            raise
        steps.append(Step(name, True, (time.perf_counter() - started) * 1000, detail))
        return value

    def dns() -> tuple[Any, str]:
        infos = _in_thread(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM), left())
        addrs = list(dict.fromkeys(info[4][0] for info in infos))
        return infos[0][4], f"{host} -> {', '.join(addrs[:4])}"

    sock: socket.socket | None = None
    try:
        try:
            address = step("dns", dns)
        except Exception:
            return steps, (
                f"check the host name '{host}' in the endpoint and this machine's DNS "
                "(/etc/resolv.conf, /etc/hosts)"
            )
        try:
            sock = step(
                "tcp",
                lambda: (
                    socket.create_connection(address[:2], timeout=left()),
                    f"connected to {address[0]}:{port}",
                ),
            )
        except ConnectionRefusedError:
            return steps, (
                f"nothing listens on {host}:{port}: start ReportPortal or fix the port "
                "in the endpoint"
            )
        except Exception:
            return steps, (
                f"{host}:{port} does not accept connections in time: check firewalls "
                "and proxies between this host and ReportPortal"
            )
        if tls:

            def handshake() -> tuple[Any, str]:
                context = ssl.create_default_context()
                if not instance.verify_ssl:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                assert sock is not None
                sock.settimeout(left())
                wrapped = context.wrap_socket(sock, server_hostname=host)
                verified = "verified" if instance.verify_ssl else "NOT verified (verify_ssl: false)"
                return wrapped, f"{wrapped.version()}, certificate {verified}"

            try:
                sock = step("tls", handshake)
            except ssl.SSLCertVerificationError:
                return steps, (
                    "the server certificate does not verify: install its CA (SSL_CERT_FILE) "
                    "or renew the certificate"
                )
            except Exception:
                return steps, f"TLS handshake with {host}:{port} failed: is it really https?"

        def http_info() -> tuple[Any, str]:
            assert sock is not None
            sock.settimeout(left())
            conn_cls = http.client.HTTPSConnection if tls else http.client.HTTPConnection
            conn = conn_cls(host, port, timeout=left())
            conn.sock = sock  # reuse the traced connection
            path = parts.path.rstrip("/") + "/api/info"
            conn.request("GET", path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            resp.read(65536)
            if resp.status >= 400:
                raise OSError(f"GET {path}: HTTP {resp.status} {resp.reason}")
            return resp.status, f"GET {path}: HTTP {resp.status}"

        try:
            step("http", http_info)
        except Exception as exc:
            if isinstance(exc, TimeoutError | socket.timeout):
                return steps, (
                    f"{host}:{port} accepts connections but does not answer HTTP: restart "
                    "the ReportPortal API service or check the reverse proxy"
                )
            return steps, (
                "/api/info did not answer 2xx: check that the endpoint is ReportPortal's "
                "base URL (without /ui or /api)"
            )
        return steps, None
    finally:
        if sock is not None:
            sock.close()


def trace_check(
    instance: Any, result: Any, settings: Any, traced: tuple[list[Step], str | None] | None = None
) -> Check:
    """The trace of one instance (``traced``: already run) plus the auth step from the
    ReportPortal check ``result``."""
    steps, fix = traced if traced is not None else trace_instance(instance)
    if fix is None and result is not None:
        if result.key_accepted is True and result.project_exists is True:
            steps.append(
                Step(
                    "auth",
                    True,
                    result.latency_ms or 0.0,
                    f"key accepted, project '{instance.project}' exists",
                )
            )
        else:
            steps.append(
                Step("auth", False, result.latency_ms or 0.0, result.error or "not accepted")
            )
            if not settings.secret(instance.api_key_env):
                fix = f"set {instance.api_key_env} (environment or .env) to a valid API key"
            elif result.key_accepted is False:
                fix = (
                    f"generate a new API key in ReportPortal (profile > API keys) and put it "
                    f"in {instance.api_key_env}"
                )
            elif result.project_exists is False:
                fix = (
                    f"create project '{instance.project}' in ReportPortal or fix "
                    f"`project:` of instance {instance.name}"
                )
            else:
                fix = "see the error above; `inv health` shows the ReportPortal check"
    name = f"trace:{instance.name}"
    details = [s.line() for s in steps]
    summary = ", ".join(f"{s.name} {'ok' if s.ok else 'FAILED'} {s.ms:.0f} ms" for s in steps)
    if fix is not None:
        failed = next((s for s in steps if not s.ok), None)
        if failed is not None:
            summary = f"{failed.name} failed: {failed.detail}"
        return Check(name, CRITICAL, summary, details, fix)
    return Check(name, OK, summary, details)


# --------------------------------------------------------------------------- all together


def run_diagnose(config: str | None, test_path: str | None = None) -> tuple[Report, Any]:
    """Every check of ``health`` and the diagnose extras, in one report."""
    started = time.monotonic()
    config_check, settings = load_settings(config)
    checks = [config_check]
    checks += guarded("dependencies", check_dependencies)
    extra: dict[str, Any] = {}
    if settings is None:
        return Report(checks, "diagnose", extra), None
    if test_path:
        from testviper.config import component_of

        checks += guarded("path", lambda: check_path(settings, test_path))
        try:
            extra["path"] = {"path": test_path, "component": component_of(settings, test_path)}
        except Exception:
            extra["path"] = {"path": test_path, "component": None}
    checks += guarded("environment", lambda: check_environment(settings))
    checks += guarded("permissions", lambda: check_permissions(settings))
    checks += guarded("coverage_sources", lambda: check_sources(settings))
    checks += health_checks(settings, reportportal=_reportportal)
    extra["duration_s"] = round(time.monotonic() - started, 3)
    return Report(checks, "diagnose", extra), settings


def _reportportal(settings: Any) -> list[Check]:
    """The health check of each instance and its connection trace, run concurrently."""
    enabled = settings.enabled_instances
    if not enabled:
        return [Check("reportportal", OK, "no enabled instance configured")]
    try:
        from testviper.reporter import queries
    except ImportError:
        return [Check("reportportal", UNKNOWN, "not available in this version", counted=False)]
    limit = settings.config.health.max_latency_ms
    with ThreadPoolExecutor(len(enabled) + 1, thread_name_prefix="tv-trace") as pool:
        checked = pool.submit(queries.check_all, settings, [i.name for i in enabled])
        traces = {i.name: pool.submit(trace_instance, i) for i in enabled}
        results = {r.name: r for r in checked.result()}
        out = []
        for inst in enabled:
            result = results.get(inst.name)
            if result is not None:
                out.append(instance_check(result, inst, limit, settings))
            out.append(trace_check(inst, result, settings, traces[inst.name].result()))
    return out


def render(report: Report) -> str:
    """Doctor-style text: the Nagios status line, then each check with details and fix."""
    marks = {OK: "[✓]", WARNING: "[!]", CRITICAL: "[✗]", UNKNOWN: "[?]"}
    lines = [report.status_line()]
    for check in report.checks:
        lines.append(f"{marks[check.state]} {check.name}: {check.summary}")
        lines += [f"      {d}" for d in check.details]
        if check.fix and check.state != OK:
            lines.append(f"      fix: {check.fix}")
    problems = [c for c in report.checks if c.counted and c.state != OK]
    if problems:
        lines.append(
            f"diagnose: {len(problems)} problem{'s' * (len(problems) > 1)} found "
            f"in {len(report.checks)} checks; worst {report.state}"
        )
    else:
        lines.append(f"diagnose: no problems found in {len(report.checks)} checks")
    return "\n".join(lines)
