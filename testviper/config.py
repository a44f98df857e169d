"""Load and validate ``testviper.yaml`` and ``.env``.

The file is found via ``--config``, then ``$TESTVIPER_CONFIG``, then ``testviper.yaml`` in
the working directory. With no file at all the embedded defaults apply, so a first run
needs no configuration. Relative paths in the file are relative to the file's directory
(the project root); without a file, to the working directory.

Secrets never live in the file: an RP instance names the environment variable that holds
its key (``api_key_env``), read from the environment or from ``.env`` next to the config.
The old variables ``RP_ENDPOINT``, ``RP_PROJECT``, ``RP_API_KEY`` and
``TV_COMPONENT_NAME`` still work as overrides.
"""

import difflib
import glob
import ipaddress
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from testviper.config_file import DEFAULT_KEY_ENV, ENV_NAME, find_config, read_yaml
from testviper.errors import UserError

GLOB_CHARS = re.compile(r"[*?\[]")
DB_URL = re.compile(r"^[\w+]+://")  # the scheme part of SQLAlchemy's URL syntax
URL_PASSWORD = re.compile(r"^([\w+]+://[^:/@]*):[^@]*@")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectSection(Section):
    name: str | None = None


class PathsSection(Section):
    state: str = ".testviper"


class Component(Section):
    """A named part of the project: its source (for coverage) and its tests."""

    source: list[str] = Field(min_length=1)
    tests: list[str] = []
    description: str = ""


class CoverageSection(Section):
    source: list[str] = ["."]
    omit: list[str] = []
    branch: bool = True
    # Like coverage.py's [paths]: name -> [canonical path, alias, ...]; aliases may hold
    # globs. Paths in a coverage report that start with an alias are read as canonical.
    paths: dict[str, list[str]] = {}

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, entries in value.items():
            if len(entries) < 2:
                raise ValueError(f"{name}: give the canonical path first, then at least one alias")
        return value


class LaunchSection(Section):
    name: str | None = None
    description: str = ""
    attributes: dict[str, str] = {}


class Instance(Section):
    """One ReportPortal server and project to deliver to."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    # Before ``endpoint``, whose validator reads it: http:// to a non-loopback host.
    allow_insecure: bool = False
    endpoint: str
    project: str
    api_key_env: str = DEFAULT_KEY_ENV
    enabled: bool = True
    timeout: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0)
    verify_ssl: bool = True
    launch: LaunchSection = LaunchSection()

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        return check_endpoint(value, bool(info.data.get("allow_insecure")))

    @property
    def insecure(self) -> bool:
        """True when the API key would cross the network unencrypted."""
        parts = urlsplit(self.endpoint)
        return parts.scheme == "http" and not _is_loopback(parts.hostname or "")

    @field_validator("api_key_env")
    @classmethod
    def _key_env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError(
                "must name an environment variable (like RP_API_KEY), not hold the key itself"
            )
        return value


def check_endpoint(value: str, allow_insecure: bool = False) -> str:
    """An instance endpoint, validated: http(s), and http:// only to loopback unless allowed."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{value}' is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure:
        raise ValueError(
            "http:// is only allowed for loopback; use https:// so the API key is encrypted"
        )
    return value.rstrip("/")


_warned_insecure: set[str] = set()


def warn_insecure(instances: Iterable[Instance]) -> None:
    """Warn on stderr, once per process and instance, about an allowed http:// endpoint."""
    for inst in instances:
        if inst.insecure and inst.name not in _warned_insecure:
            _warned_insecure.add(inst.name)
            print(
                f"testviper: warning: reportportal instance '{inst.name}' uses http:// to "
                f"{urlsplit(inst.endpoint).hostname} (allow_insecure: true): its API key and "
                "results cross the network unencrypted",
                file=sys.stderr,
            )


class ReportPortalSection(Section):
    instances: list[Instance] = []
    # `inv rotate-keys --check` warns about keys not rotated for longer than this.
    max_key_age_days: int = Field(90, ge=1)
    # `inv run` streams results while the tests run; false: it delivers after them.
    live: bool = True


class Level(Section):
    fail_under: float | None = Field(None, ge=0, le=100)
    warn_under: float | None = Field(None, ge=0, le=100)


class ThresholdsSection(Section):
    overall: Level = Level()
    components: dict[str, Level] = {}
    # glob -> minimum for every matching file: a number (fail_under) or a Level.
    files: dict[str, float | Level] = {}

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, float | Level]) -> dict[str, float | Level]:
        for pattern, minimum in value.items():
            if isinstance(minimum, float) and not 0 <= minimum <= 100:
                raise ValueError(f"'{pattern}': {minimum:g} is not a percentage (0 to 100)")
        return value


GateLevel = Literal["fail", "warn"]


class RegressionGate(Section):
    """Coverage drop against a baseline run, in percentage points."""

    max_drop: float = Field(0.5, ge=0, le=100)
    noise_floor: float = Field(0.1, ge=0, le=100)
    level: GateLevel = "fail"
    # A file is judged only when it has this many more missed statements than before.
    min_changed_statements: int = Field(5, ge=0)
    files: Literal["fail", "warn", "off"] = "warn"
    baseline: Literal["previous", "branch", "median"] = "previous"
    branch: str | None = None
    median_runs: int = Field(5, ge=1, le=1000)


class PatchGate(Section):
    """Coverage of the lines changed against ``--base``."""

    fail_under: float | None = Field(None, ge=0, le=100)
    warn_under: float | None = Field(80.0, ge=0, le=100)
    min_lines: int = Field(0, ge=0)


class SlowGate(Section):
    level: Literal["fail", "warn", "off"] = "warn"
    factor: float = Field(2.0, ge=1)
    floor: float = Field(0.5, ge=0)
    min_samples: int = Field(5, ge=1)
    window: int = Field(20, ge=1)


class TestsGate(Section):
    __test__ = False  # not a pytest test class, despite the name

    fail_on_failures: bool = True
    new_failures: Literal["fail", "warn", "off"] = "fail"
    flaky: Literal["fail", "warn", "off"] = "warn"
    flaky_window: int = Field(30, ge=1)
    slow: SlowGate = SlowGate()


class GateSection(Section):
    on_missing_baseline: Literal["pass", "warn", "fail"] = "warn"
    regression: RegressionGate = RegressionGate()
    patch: PatchGate = PatchGate()
    tests: TestsGate = TestsGate()


class HistorySection(Section):
    url: str | None = None
    busy_timeout: float = Field(10.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not DB_URL.match(value):
            raise ValueError(
                f"'{value}' is not a database URL (like sqlite:///path or postgresql://host/db)"
            )
        return value


class RetentionSection(Section):
    runs_days: int = Field(180, ge=1)
    runs_keep: int = Field(1000, ge=1)
    run_dirs_days: int = Field(30, ge=1)
    reports_days: int = Field(90, ge=1)
    backup_reports_days: int = Field(30, ge=0)


class HealthSection(Section):
    """Limits for `inv health` and `inv diagnose`: past the first WARNING, the second CRITICAL."""

    max_run_age_hours: float = Field(26.0, gt=0)
    critical_run_age_hours: float = Field(72.0, gt=0)
    outbox_warn_hours: float = Field(6.0, gt=0)
    outbox_critical_hours: float = Field(24.0, gt=0)
    min_free_mb: float = Field(1024.0, ge=0)
    critical_free_mb: float = Field(256.0, ge=0)
    max_state_mb: float = Field(2048.0, gt=0)
    critical_state_mb: float = Field(10240.0, gt=0)
    max_latency_ms: float = Field(2000.0, gt=0)
    # This host runs ops/schedules.yaml: a missing installation is a WARNING.
    expect_schedule: bool = False


BADGE_COLOURS = {
    "red": "#e05d44",
    "orange": "#fe7d37",
    "yellow": "#dfb317",
    "yellowgreen": "#a4a61d",
    "green": "#97ca00",
    "brightgreen": "#44cc11",
    "grey": "#9f9f9f",
}
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class ReportsSection(Section):
    """`inv report`: badge colour bands (colour -> lowest percentage) and table sizes."""

    badge_bands: dict[str, float] = {"red": 0, "orange": 60, "yellow": 75, "green": 90}
    slowest: int = Field(10, ge=1, le=1000)

    @field_validator("badge_bands")
    @classmethod
    def _bands(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("give at least one colour band, like {red: 0, green: 90}")
        for colour, lowest in value.items():
            if colour not in BADGE_COLOURS and not HEX_COLOUR.match(colour):
                known = ", ".join(BADGE_COLOURS)
                raise ValueError(f"'{colour}' is not a colour ({known} or #rrggbb)")
            if not 0 <= lowest <= 100:
                raise ValueError(f"{colour}: {lowest:g} is not a percentage (0 to 100)")
        return value


class AlertChannel(Section):
    """One alert destination; its URL is read from the environment variable ``url_env``."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["slack", "webhook"]
    url_env: str
    min_severity: Literal["info", "warning", "critical"] = "warning"
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    enabled: bool = True

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, value: str) -> str:
        if "://" in value or not ENV_NAME.match(value):
            raise ValueError(
                "must name an environment variable (like SLACK_WEBHOOK_URL) holding the URL, "
                "not the URL itself: webhook URLs are secrets and stay out of the config file"
            )
        return value


class AlertsSection(Section):
    """`inv alert.test` and the routines' alerts: channels, dedup window, retry limits."""

    channels: list[AlertChannel] = []
    dedup_minutes: float = Field(60.0, ge=0)  # the same alert again within this: not sent
    backoff: float = Field(1.0, ge=0)  # first retry delay in seconds, doubled per retry
    max_backoff: float = Field(30.0, ge=0)
    max_retry_after: float = Field(60.0, ge=0)  # cap on a 429's Retry-After

    @field_validator("channels")
    @classmethod
    def _unique(cls, value: list[AlertChannel]) -> list[AlertChannel]:
        names = [c.name for c in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"channel names must be unique: {', '.join(dupes)}")
        return value


# The steps each routine knows, in their default order; ops/routines.py maps each name
# to its function (a test keeps the two in step). A config may run fewer, in any order.
ROUTINE_STEPS: dict[str, tuple[str, ...]] = {
    "daily": ("health", "sync", "gate", "ci", "digest", "reports"),
    "weekly": ("digest", "trends", "flaky", "slow", "config"),
    "monthly": ("digest", "suggestions", "durations", "outdated", "audit"),
}


class RoutinesSection(Section):
    """`inv daily` / `weekly` / `monthly`: which steps each routine runs, in order."""

    daily: list[str] = list(ROUTINE_STEPS["daily"])
    weekly: list[str] = list(ROUTINE_STEPS["weekly"])
    monthly: list[str] = list(ROUTINE_STEPS["monthly"])
    # `pip list --outdated` and pip-audit ask the package index: bounded, as cron needs.
    dependency_timeout: float = Field(300.0, gt=0)

    @field_validator("daily", "weekly", "monthly")
    @classmethod
    def _steps(cls, value: list[str], info: ValidationInfo) -> list[str]:
        routine = str(info.field_name)
        known = ROUTINE_STEPS[routine]
        if not value:
            raise ValueError(f"give at least one step ({', '.join(known)})")
        for i, step in enumerate(value):
            if step not in known:
                close = difflib.get_close_matches(str(step), known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ValueError(
                    f"item {i + 1}: '{step}' is not a {routine} step; {hint}"
                    f"(known: {', '.join(known)})"
                )
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise ValueError(f"a step is listed twice: {', '.join(dupes)}")
        return value


GITHUB_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


class GitHubSection(Section):
    """`inv ci-status` and the daily ci step: the runs of one GitHub Actions workflow."""

    repository: str | None = None  # owner/name; default $GITHUB_REPOSITORY
    workflow: str | None = None  # the workflow's file name (ci.yml) or numeric id
    branch: str | None = None  # only runs of this branch (default: every branch)
    api_url: str = "https://api.github.com"  # GitHub Enterprise: https://HOST/api/v3
    token_env: str = "GITHUB_TOKEN"
    timeout: float = Field(10.0, gt=0)
    limit: int = Field(10, ge=1, le=100)  # one page of the API: at most 100

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not GITHUB_REPOSITORY.match(value):
            raise ValueError(f"'{value}' is not owner/name (like octo-org/octo-repo)")
        return value

    @field_validator("workflow")
    @classmethod
    def _workflow(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "/" in value):
            raise ValueError(
                f"'{value}' is not a workflow file name (like ci.yml, without .github/workflows/) "
                "or a numeric id"
            )
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{value}' is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(
                "http:// is only allowed for loopback; use https:// so the token is encrypted"
            )
        return value.rstrip("/")

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError(
                "must name an environment variable (like GITHUB_TOKEN), not hold the token itself"
            )
        return value


class Config(Section):
    project: ProjectSection = ProjectSection()
    paths: PathsSection = PathsSection()
    components: dict[str, Component] = {}
    coverage: CoverageSection = CoverageSection()
    reportportal: ReportPortalSection = ReportPortalSection()
    thresholds: ThresholdsSection = ThresholdsSection()
    gate: GateSection = GateSection()
    history: HistorySection = HistorySection()
    retention: RetentionSection = RetentionSection()
    reports: ReportsSection = ReportsSection()
    health: HealthSection = HealthSection()
    alerts: AlertsSection = AlertsSection()
    routines: RoutinesSection = RoutinesSection()
    github: GitHubSection = GitHubSection()


@dataclass
class Settings:
    """The validated configuration plus where it came from."""

    config: Config
    path: Path | None
    root: Path
    dotenv: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    label: str | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "embedded defaults"

    @property
    def project_name(self) -> str:
        return self.config.project.name or self.root.name

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.config.paths.state)

    @property
    def history_url(self) -> str:
        return self.config.history.url or f"sqlite:///{self.state_dir / 'history.sqlite'}"

    def resolve(self, path: str) -> Path:
        return (self.root / os.path.expanduser(path)).resolve()

    def secret(self, name: str) -> str | None:
        """The value of a secret variable: the environment first, then ``.env``."""
        return os.environ.get(name) or self.dotenv.get(name) or None

    @property
    def enabled_instances(self) -> list[Instance]:
        """The ReportPortal instances runs are delivered to."""
        return [inst for inst in self.config.reportportal.instances if inst.enabled]

    def missing_keys(self) -> list[tuple[str, str]]:
        """(instance, variable) for every enabled instance whose key variable is not set."""
        return [
            (inst.name, inst.api_key_env)
            for inst in self.enabled_instances
            if not self.secret(inst.api_key_env)
        ]

    def component_globs(self, name: str) -> list[str]:
        """Absolute coverage.py-style include globs for a component's source."""
        return [self._include_glob(src) for src in self.config.components[name].source]

    def _include_glob(self, src: str) -> str:
        if GLOB_CHARS.search(src):
            return str(self.root / src)
        resolved = self.resolve(src)
        return f"{resolved}/**/*" if resolved.is_dir() else str(resolved)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load(explicit: str | os.PathLike[str] | None = None, check_paths: bool = True) -> Settings:
    """Find, parse and validate the configuration.

    Raises UserError with a one-line message naming the file and field on any problem.
    """
    path = find_config(explicit)
    root = path.parent if path else Path.cwd().resolve()
    raw = read_yaml(path) if path else {}
    where = str(path) if path else "defaults"
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{where}: {_describe(exc)}") from None
    settings = Settings(config=config, path=path, root=root, dotenv=_read_dotenv(root))
    _apply_env_overrides(settings)
    for problem in _check_references(config):
        raise UserError(f"{where}: {problem}")
    if check_paths:
        for problem in _check_paths(settings):
            raise UserError(f"{where}: {problem}")
    return settings


def _read_dotenv(root: Path) -> dict[str, str]:
    env_file = root / ".env"
    if not env_file.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


def _known_keys(model: type[BaseModel] = Config) -> set[str]:
    keys = set(model.model_fields)
    for info in model.model_fields.values():
        for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                keys |= _known_keys(candidate)
    return keys


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(exc: ValidationError) -> str:
    """One line for the first problem pydantic found, with a fix where we know one."""
    errors = exc.errors()
    # A misspelt required key shows up twice (unknown + missing): the typo is the news.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = _location(err["loc"])
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1])
        close = difflib.get_close_matches(key, _known_keys(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"{loc}: unknown key{hint}"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] not in ("missing", "value_error") and "input" in err:
        message += f" (got {err['input']!r})"
    return f"{loc}: {message}"


def _apply_env_overrides(settings: Settings) -> None:
    """Let the old runner's variables override the file, as its users expect."""
    env = {**settings.dotenv, **os.environ}
    instances = settings.config.reportportal.instances
    endpoint, project = env.get("RP_ENDPOINT"), env.get("RP_PROJECT")
    if endpoint and not instances:
        try:
            instances.append(
                Instance(name="default", endpoint=endpoint, project=project or "testviper")
            )
        except ValidationError as exc:
            raise UserError(f"RP_ENDPOINT: {_describe(exc).split(': ', 1)[1]}") from None
        settings.overrides["reportportal.instances[0]"] = "RP_ENDPOINT/RP_PROJECT"
    elif instances:
        first = instances[0]
        if endpoint:
            try:
                first.endpoint = check_endpoint(endpoint, first.allow_insecure)
            except ValueError as exc:
                raise UserError(f"RP_ENDPOINT: {exc}") from None
            settings.overrides["reportportal.instances[0].endpoint"] = "RP_ENDPOINT"
        if project:
            first.project = project
            settings.overrides["reportportal.instances[0].project"] = "RP_PROJECT"
    if env.get("TV_COMPONENT_NAME"):
        settings.label = env["TV_COMPONENT_NAME"]
        settings.overrides["run label"] = "TV_COMPONENT_NAME"


def _check_references(config: Config) -> list[str]:
    problems = []
    names = [inst.name for inst in config.reportportal.instances]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"reportportal.instances: the name '{dup}' is used twice")
    for name in config.thresholds.components:
        if name not in config.components:
            known = ", ".join(config.components) or "none defined"
            problems.append(
                f"thresholds.components.{name}: no component named '{name}' (components: {known})"
            )
    return problems


def _check_paths(settings: Settings) -> list[str]:
    problems = []
    for name, comp in settings.config.components.items():
        for key, entries in (("source", comp.source), ("tests", comp.tests)):
            for i, entry in enumerate(entries):
                problem = _missing(settings.root, entry)
                if problem:
                    problems.append(f"components.{name}.{key}[{i}]: {problem}")
    for i, entry in enumerate(settings.config.coverage.source):
        # A bare name may be an importable package rather than a directory.
        if ("/" in entry or entry.startswith(".")) and (problem := _missing(settings.root, entry)):
            problems.append(f"coverage.source[{i}]: {problem}")
    return problems


def _missing(root: Path, entry: str) -> str | None:
    if GLOB_CHARS.search(entry):
        if not glob.glob(str(root / entry), recursive=True):
            return f"the pattern '{entry}' matches nothing under {root}"
        return None
    if (root / entry).exists():
        return None
    kind = "file" if Path(entry).suffix else "directory"
    return f"no such {kind} '{entry}'"


def component_of(settings: Settings, test_path: str) -> str | None:
    """The component whose ``tests`` paths contain ``test_path`` (first match wins).

    Matching is by path prefix or glob on whole path segments, never by substring: a
    graphviper test whose file name mentions xradio stays graphviper.
    """
    rel = Path(test_path.split("::", 1)[0])
    if rel.is_absolute():
        try:
            rel = rel.resolve().relative_to(settings.root)
        except ValueError:
            return None
    for name, comp in settings.config.components.items():
        for entry in comp.tests:
            pattern = entry.rstrip("/")
            if GLOB_CHARS.search(pattern):
                if rel.match(pattern) or any(p.match(pattern) for p in rel.parents):
                    return name
            elif rel == Path(pattern) or Path(pattern) in rel.parents:
                return name
    return None


def sample_text() -> str:
    """The commented sample configuration shipped in the package."""
    from importlib.resources import files

    return files("testviper.templates").joinpath("testviper.yaml").read_text(encoding="utf-8")


def effective_yaml(settings: Settings) -> str:
    """The configuration in effect, with derived paths and each key's status.

    Secrets never appear: an instance shows whether its key variable is set.
    """
    data = settings.config.model_dump(mode="json")
    data["project"]["name"] = settings.project_name
    data["paths"]["state"] = str(settings.state_dir)
    data["history"]["url"] = URL_PASSWORD.sub(r"\1:***@", settings.history_url)
    for inst in data["reportportal"]["instances"]:
        found = settings.secret(inst["api_key_env"])
        inst["api_key"] = f"set (from {inst['api_key_env']})" if found else "NOT SET"
    if settings.label:
        data["run_label"] = settings.label
    if settings.overrides:
        data["overridden_by_environment"] = settings.overrides
    return yaml.safe_dump(data, sort_keys=False)
