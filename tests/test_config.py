"""Loading ``testviper.yaml``: one clear line per mistake, defaults, discovery, env, secrets."""

import os
import re
from pathlib import Path

import pytest
from conftest import write_files

from testviper.config import Config, effective_yaml, load, sample_text
from testviper.config_file import CONFIG_NAME
from testviper.errors import UserError

SECRET = "sk-TOPSECRET-4f1e9b2c"
DOTENV_SECRET = "dotenv-TOPSECRET-77aa01"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run each test in an empty directory without the host's RP/TV/TestViper variables."""
    for name in list(os.environ):
        if name.startswith(("RP_", "TV_", "TESTVIPER_")):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_config(directory: Path, text: str, name: str = CONFIG_NAME) -> Path:
    """Write ``text`` as a config file in ``directory`` and return its absolute path."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path.resolve()


def load_error(explicit: str | Path | None = None) -> str:
    """Load the configuration, which must fail, and return the one-line message."""
    with pytest.raises(UserError) as caught:
        load(explicit)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def rp_instances(*endpoints: str, key_env: str = "RP_API_KEY") -> str:
    """A reportportal section with one instance per endpoint."""
    lines = ["reportportal:", "  instances:"]
    for i, endpoint in enumerate(endpoints):
        lines.append(
            f"  - {{name: rp{i}, endpoint: '{endpoint}', project: p, api_key_env: '{key_env}'}}"
        )
    return "\n".join(lines) + "\n"


# --- bad input: one line naming the file and the field ---------------------------------


def test_missing_explicit_config_names_file_and_origin(isolated: Path) -> None:
    """`--config nope.yaml` that does not exist is a one-line error naming the path and flag."""
    message = load_error("nope.yaml")
    assert message.startswith("nope.yaml: no such config file (from --config)")
    assert "config.init" in message


def test_missing_config_from_env_names_variable(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TESTVIPER_CONFIG naming a missing file is an error naming the path and the variable."""
    monkeypatch.setenv("TESTVIPER_CONFIG", str(isolated / "gone.yaml"))
    message = load_error()
    assert message.startswith(f"{isolated / 'gone.yaml'}: no such config file")
    assert "TESTVIPER_CONFIG" in message


def test_missing_explicit_config_is_not_replaced_by_local_file(isolated: Path) -> None:
    """A wrong --config fails even when ./testviper.yaml exists, instead of silently using it."""
    write_config(isolated, "project: {name: local}\n")
    assert "no such config file" in load_error("nope.yaml")


@pytest.mark.parametrize(
    "text", ["", "\n\n", "# only a comment\n"], ids=["empty", "blank", "comment"]
)
def test_empty_file_is_an_error_with_a_fix(isolated: Path, text: str) -> None:
    """An empty (or comment-only) config file is refused with a suggestion how to fix it."""
    path = write_config(isolated, text)
    message = load_error(path)
    assert message.startswith(f"{path}: the file is empty")
    assert "config.init" in message


@pytest.mark.parametrize(
    ("text", "line_col"),
    [
        ("project:\n\tname: x\n", "2:1"),
        ("a: b: c\n", "1:5"),
        ("project:\n  name: x\n bad: y\n", "3:2"),
    ],
    ids=["tab", "nested-colon", "bad-indent"],
)
def test_invalid_yaml_names_file_line_and_column(isolated: Path, text: str, line_col: str) -> None:
    """Invalid YAML is reported as FILE:LINE:COL with the parser's problem, one line."""
    path = write_config(isolated, text)
    assert load_error(path).startswith(f"{path}:{line_col}: invalid YAML: ")


def test_invalid_yaml_at_end_of_stream_still_has_position(isolated: Path) -> None:
    """An unclosed bracket (error at end of file) still carries a line and column."""
    path = write_config(isolated, "coverage:\n  omit: [a, b\n")
    assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: invalid YAML: ", load_error(path))


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(isolated: Path, text: str, kind: str) -> None:
    """A top level that is not a mapping is refused, naming what it is instead."""
    path = write_config(isolated, text)
    message = load_error(path)
    assert message.startswith(f"{path}: the top level must be a mapping of sections")
    assert message.endswith(f"not a {kind}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("compnents: {}\n", "compnents: unknown key; did you mean 'components'?"),
        ("histroy: {}\n", "histroy: unknown key; did you mean 'history'?"),
        (
            "coverage:\n  brnach: true\n",
            "coverage.brnach: unknown key; did you mean 'branch'?",
        ),
        (
            "components:\n  x:\n    source: [src]\n    sorce: [src]\n",
            "components.x.sorce: unknown key; did you mean 'source'?",
        ),
        (
            "components:\n  x:\n    sorce: [src]\n",
            "components.x.sorce: unknown key; did you mean 'source'?",
        ),
    ],
    ids=["top", "top-history", "section", "nested-extra", "nested-typo-only"],
)
def test_unknown_key_suggests_the_close_one(isolated: Path, text: str, expected: str) -> None:
    """An unknown key (top level or nested) is named with its full path and a suggestion."""
    (isolated / "src").mkdir()
    path = write_config(isolated, text)
    assert load_error(path) == f"{path}: {expected}"


def test_unknown_key_without_close_match_has_no_suggestion(isolated: Path) -> None:
    """A key nothing like a real one is reported as unknown without a wrong guess."""
    path = write_config(isolated, "zzzqqq: 1\n")
    assert load_error(path) == f"{path}: zzzqqq: unknown key"


@pytest.mark.parametrize(
    ("text", "field", "detail"),
    [
        ("coverage:\n  branch: maybe\n", "coverage.branch", "(got 'maybe')"),
        ("history:\n  busy_timeout: abc\n", "history.busy_timeout", "(got 'abc')"),
        ("history:\n  busy_timeout: -1\n", "history.busy_timeout", "greater than or equal to 0"),
        ("reportportal:\n  instances: {}\n", "reportportal.instances", "valid list"),
        ("components:\n  x:\n    source: src\n", "components.x.source", "valid list"),
        ("components:\n  x:\n    source: []\n", "components.x.source", "at least 1 item"),
        (
            "thresholds:\n  overall: {fail_under: 150}\n",
            "thresholds.overall.fail_under",
            "less than or equal to 100",
        ),
        (
            "retention:\n  runs_days: 0\n",
            "retention.runs_days",
            "greater than or equal to 1",
        ),
    ],
    ids=[
        "branch-maybe",
        "busy-abc",
        "busy-negative",
        "instances-dict",
        "source-str",
        "source-empty",
        "fail-under-150",
        "runs-days-0",
    ],
)
def test_wrong_type_or_range_names_field(
    isolated: Path, text: str, field: str, detail: str
) -> None:
    """A value of the wrong type or range is reported with its dotted field path."""
    path = write_config(isolated, text)
    message = load_error(path)
    assert message.startswith(f"{path}: {field}: ")
    assert detail in message


@pytest.mark.parametrize("url", ["not a url", "/var/lib/history.sqlite", "sqlite:/x.db"])
def test_history_url_must_be_a_database_url(isolated: Path, url: str) -> None:
    """A history.url that is not a database URL is a config error, not a failure mid-run."""
    path = write_config(isolated, f"history:\n  url: '{url}'\n")
    message = load_error(path)
    assert message.startswith(f"{path}: history.url: ")
    assert f"'{url}'" in message


@pytest.mark.parametrize(
    "url", ["sqlite:///rel/history.sqlite", "sqlite:////abs/h.sqlite", "postgresql://h/db"]
)
def test_history_url_accepts_database_urls(isolated: Path, url: str) -> None:
    """Database URLs in history.url are accepted and used as given."""
    path = write_config(isolated, f"history:\n  url: '{url}'\n")
    assert load(path).history_url == url


def test_missing_component_source_is_exact(isolated: Path) -> None:
    """A component source directory that does not exist gives exactly the documented message."""
    path = write_config(isolated, "components:\n  xradio:\n    source: [xradio/src]\n")
    assert (
        load_error(path) == f"{path}: components.xradio.source[0]: no such directory 'xradio/src'"
    )


def test_missing_component_test_file_names_index(isolated: Path) -> None:
    """A missing entry in a component's tests list is named with its index and kind."""
    write_files(isolated, {"src/a.py": "", "tests/test_a.py": ""})
    text = "components:\n  a:\n    source: [src]\n    tests: [tests/test_a.py, tests/test_b.py]\n"
    path = write_config(isolated, text)
    assert load_error(path) == f"{path}: components.a.tests[1]: no such file 'tests/test_b.py'"


def test_glob_matching_nothing_is_an_error(isolated: Path) -> None:
    """A source glob matching no file is named, with the pattern and the root searched."""
    (isolated / "src").mkdir()
    path = write_config(isolated, "components:\n  xradio:\n    source: ['src/*/core.py']\n")
    assert load_error(path) == (
        f"{path}: components.xradio.source[0]: the pattern 'src/*/core.py' matches nothing "
        f"under {path.parent}"
    )


def test_glob_matching_a_file_is_accepted(isolated: Path) -> None:
    """The same glob is accepted once a file matches it (the check is not always failing)."""
    write_files(isolated, {"src/pkg/core.py": ""})
    path = write_config(isolated, "components:\n  xradio:\n    source: ['src/*/core.py']\n")
    assert list(load(path).config.components) == ["xradio"]


def test_coverage_source_path_must_exist(isolated: Path) -> None:
    """A path-like coverage.source entry that does not exist is named with its index."""
    path = write_config(isolated, "coverage:\n  source: [., ./nope]\n")
    assert load_error(path) == f"{path}: coverage.source[1]: no such directory './nope'"


def test_coverage_source_package_name_is_not_a_path(isolated: Path) -> None:
    """A bare coverage.source name (an importable package) is not checked as a directory."""
    path = write_config(isolated, "coverage:\n  source: [somepackage]\n")
    assert load(path).config.coverage.source == ["somepackage"]


def test_path_checks_can_be_skipped(isolated: Path) -> None:
    """check_paths=False loads a config whose component paths do not exist (for config.show)."""
    path = write_config(isolated, "components:\n  xradio:\n    source: [xradio/src]\n")
    assert list(load(path, check_paths=False).config.components) == ["xradio"]


@pytest.mark.parametrize(
    ("components", "known"),
    [("", "none defined"), ("components:\n  arith:\n    source: [src]\n", "arith")],
    ids=["no-components", "one-component"],
)
def test_thresholds_for_unknown_component(isolated: Path, components: str, known: str) -> None:
    """Thresholds for a component that is not defined name it and list the defined ones."""
    (isolated / "src").mkdir()
    path = write_config(isolated, components + "thresholds:\n  components:\n    ghost: {}\n")
    assert load_error(path) == (
        f"{path}: thresholds.components.ghost: no component named 'ghost' (components: {known})"
    )


def test_duplicate_instance_names(isolated: Path) -> None:
    """Two ReportPortal instances with the same name are refused, naming the name."""
    text = (
        "reportportal:\n  instances:\n"
        "  - {name: main, endpoint: 'https://a.example.org', project: p}\n"
        "  - {name: main, endpoint: 'https://b.example.org', project: q}\n"
    )
    path = write_config(isolated, text)
    assert load_error(path) == f"{path}: reportportal.instances: the name 'main' is used twice"


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://rp.example.org",
        "http://10.0.0.5:8080",
        "http://0.0.0.0",
        "http://localhost.example.org",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_refused_for_non_loopback(isolated: Path, endpoint: str) -> None:
    """http:// to anything but loopback is refused, naming the instance's endpoint field."""
    path = write_config(isolated, rp_instances(endpoint))
    assert load_error(path).startswith(
        f"{path}: reportportal.instances[0].endpoint: http:// is only allowed for loopback"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1",
        "http://127.0.0.1:8080/",
        "http://localhost",
        "http://localhost:8080",
        "http://[::1]:8080",
        "https://rp.example.org/",
    ],
)
def test_loopback_http_and_https_accepted(isolated: Path, endpoint: str) -> None:
    """http:// to 127.0.0.1, localhost or ::1 and any https:// are accepted (trailing / cut)."""
    path = write_config(isolated, rp_instances(endpoint))
    [instance] = load(path).config.reportportal.instances
    assert instance.endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize("endpoint", ["ftp://rp.example.org", "rp.example.org", "https://"])
def test_endpoint_must_be_http_url(isolated: Path, endpoint: str) -> None:
    """An endpoint that is not an http(s) URL with a host is refused."""
    path = write_config(isolated, rp_instances(endpoint))
    assert load_error(path) == (
        f"{path}: reportportal.instances[0].endpoint: '{endpoint}' is not an http(s) URL"
    )


@pytest.mark.parametrize("value", ["0f3a-77c2-4b1e-secretish", "has space", "1LEADING", ""])
def test_api_key_env_must_be_a_variable_name(isolated: Path, value: str) -> None:
    """api_key_env holding something that is not a variable name is refused without echoing it."""
    path = write_config(isolated, rp_instances("https://rp.example.org", key_env=value))
    message = load_error(path)
    assert message == (
        f"{path}: reportportal.instances[0].api_key_env: must name an environment variable "
        "(like RP_API_KEY), not hold the key itself"
    )


def test_api_key_env_accepts_variable_name(isolated: Path) -> None:
    """A proper variable name in api_key_env is accepted as is."""
    path = write_config(isolated, rp_instances("https://rp.example.org", key_env="MY_RP_KEY_2"))
    assert load(path).config.reportportal.instances[0].api_key_env == "MY_RP_KEY_2"


# --- defaults and discovery -------------------------------------------------------------


def test_no_config_file_uses_defaults(isolated: Path) -> None:
    """With no config file anywhere, the defaults apply relative to the working directory."""
    settings = load()
    cwd = isolated.resolve()
    assert settings.path is None
    assert settings.source == "embedded defaults"
    assert settings.root == cwd
    assert settings.state_dir == cwd / ".testviper"
    assert settings.history_url == f"sqlite:///{cwd / '.testviper' / 'history.sqlite'}"
    assert settings.project_name == "work"
    assert settings.config == Config()
    assert not (cwd / ".testviper").exists(), "loading must not create the state directory"


@pytest.fixture
def three_configs(isolated: Path, tmp_path: Path) -> dict[str, Path]:
    """A ./testviper.yaml, a file for TESTVIPER_CONFIG and one for --config, told apart by name."""
    return {
        "cwd": write_config(isolated, "project: {name: from-cwd}\n"),
        "env": write_config(tmp_path / "envdir", "project: {name: from-env}\n"),
        "explicit": write_config(tmp_path / "explicitdir", "project: {name: from-explicit}\n"),
    }


@pytest.mark.parametrize(
    ("use_env", "use_explicit", "winner"),
    [
        (False, False, "cwd"),
        (True, False, "env"),
        (False, True, "explicit"),
        (True, True, "explicit"),
    ],
)
def test_discovery_order(
    three_configs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    use_env: bool,
    use_explicit: bool,
    winner: str,
) -> None:
    """--config beats TESTVIPER_CONFIG, which beats ./testviper.yaml."""
    if use_env:
        monkeypatch.setenv("TESTVIPER_CONFIG", str(three_configs["env"]))
    settings = load(three_configs["explicit"] if use_explicit else None)
    assert settings.path == three_configs[winner]
    assert settings.project_name == f"from-{winner}"
    assert settings.root == three_configs[winner].parent


def test_relative_paths_resolve_against_config_directory(isolated: Path, tmp_path: Path) -> None:
    """Paths in the file are relative to the file's directory, not the working directory."""
    proj = tmp_path / "elsewhere" / "proj"
    write_files(proj, {"lib/mod.py": "", "tests/test_mod.py": ""})
    text = "paths: {state: var/tv}\ncomponents:\n  lib:\n    source: [lib]\n    tests: [tests]\n"
    write_config(proj, text)
    settings = load(Path("..") / "elsewhere" / "proj" / CONFIG_NAME)
    root = proj.resolve()
    assert settings.root == root
    assert settings.project_name == "proj"
    assert settings.state_dir == root / "var" / "tv"
    assert settings.history_url == f"sqlite:///{root / 'var' / 'tv' / 'history.sqlite'}"
    assert settings.component_globs("lib") == [f"{root / 'lib'}/**/*"]


def test_relative_config_env_resolves_against_cwd(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative TESTVIPER_CONFIG is found from the working directory; its root is its dir."""
    path = write_config(isolated / "conf", "project: {name: rel}\n")
    monkeypatch.setenv("TESTVIPER_CONFIG", "conf/testviper.yaml")
    settings = load()
    assert settings.path == path
    assert settings.root == path.parent


# --- legacy environment overrides ------------------------------------------------------


def test_rp_env_creates_default_instance(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RP_ENDPOINT/RP_PROJECT with no configured instance create one named 'default'."""
    monkeypatch.setenv("RP_ENDPOINT", "https://rp.example.org/")
    monkeypatch.setenv("RP_PROJECT", "legacy")
    settings = load()
    [instance] = settings.config.reportportal.instances
    assert (instance.name, instance.endpoint, instance.project) == (
        "default",
        "https://rp.example.org",
        "legacy",
    )
    assert instance.api_key_env == "RP_API_KEY"
    assert settings.overrides == {"reportportal.instances[0]": "RP_ENDPOINT/RP_PROJECT"}


def test_rp_env_instance_does_not_leak_into_next_load(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instance created from RP_ENDPOINT is not left in shared defaults for later loads."""
    monkeypatch.setenv("RP_ENDPOINT", "https://rp.example.org")
    assert len(load().config.reportportal.instances) == 1
    monkeypatch.delenv("RP_ENDPOINT")
    assert load().config.reportportal.instances == []
    assert Config().reportportal.instances == []


def test_rp_env_overrides_first_configured_instance(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RP_ENDPOINT/RP_PROJECT override the first instance only, and the override is recorded."""
    path = write_config(isolated, rp_instances("https://a.example.org", "https://b.example.org"))
    monkeypatch.setenv("RP_ENDPOINT", "https://override.example.org/")
    monkeypatch.setenv("RP_PROJECT", "overridden")
    settings = load(path)
    first, second = settings.config.reportportal.instances
    assert (first.name, first.endpoint, first.project) == (
        "rp0",
        "https://override.example.org",
        "overridden",
    )
    assert (second.endpoint, second.project) == ("https://b.example.org", "p")
    assert sorted(settings.overrides.values()) == ["RP_ENDPOINT", "RP_PROJECT"]
    assert set(settings.overrides) == {
        "reportportal.instances[0].endpoint",
        "reportportal.instances[0].project",
    }


def test_rp_env_not_set_leaves_instances_alone(isolated: Path) -> None:
    """Without the legacy variables the configured instances are used as written."""
    path = write_config(isolated, rp_instances("https://a.example.org"))
    settings = load(path)
    assert settings.config.reportportal.instances[0].endpoint == "https://a.example.org"
    assert settings.overrides == {}


@pytest.mark.parametrize("configured", [False, True], ids=["no-instance", "with-instance"])
def test_rp_endpoint_plain_http_is_a_clear_error(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, configured: bool
) -> None:
    """A non-loopback http:// RP_ENDPOINT is refused, naming RP_ENDPOINT."""
    if configured:
        write_config(isolated, rp_instances("https://a.example.org"))
    monkeypatch.setenv("RP_ENDPOINT", "http://rp.example.com")
    assert load_error() == (
        "RP_ENDPOINT: http:// is only allowed for loopback; "
        "use https:// so the API key is encrypted"
    )


def test_rp_endpoint_loopback_http_accepted(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http://127.0.0.1 RP_ENDPOINT (a local test server) is accepted."""
    monkeypatch.setenv("RP_ENDPOINT", "http://127.0.0.1:8080")
    assert load().config.reportportal.instances[0].endpoint == "http://127.0.0.1:8080"


def test_rp_endpoint_from_dotenv(isolated: Path) -> None:
    """RP_ENDPOINT in .env next to the config works like the environment variable."""
    write_config(isolated, "project: {name: x}\n")
    (isolated / ".env").write_text("RP_ENDPOINT=https://dotenv.example.org\n")
    assert load().config.reportportal.instances[0].endpoint == "https://dotenv.example.org"


def test_tv_component_name_sets_label(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TV_COMPONENT_NAME becomes the run label and is recorded as an override."""
    assert load().label is None
    monkeypatch.setenv("TV_COMPONENT_NAME", "xradio")
    settings = load()
    assert settings.label == "xradio"
    assert settings.overrides == {"run label": "TV_COMPONENT_NAME"}


# --- secrets ----------------------------------------------------------------------------


@pytest.fixture
def config_elsewhere(tmp_path: Path) -> Path:
    """A config in its own directory with a .env holding a key; the cwd has a decoy .env."""
    conf_dir = tmp_path / "conf"
    path = write_config(conf_dir, rp_instances("https://rp.example.org", key_env="MY_RP_KEY"))
    (conf_dir / ".env").write_text(f"MY_RP_KEY={DOTENV_SECRET}\nOTHER=x\n")
    return path


def test_dotenv_next_to_config_supplies_secret(isolated: Path, config_elsewhere: Path) -> None:
    """The .env beside the config file (not the one in the cwd) supplies secrets."""
    (isolated / ".env").write_text("MY_RP_KEY=decoy-from-cwd\n")
    settings = load(config_elsewhere)
    assert settings.secret("MY_RP_KEY") == DOTENV_SECRET
    assert settings.secret("NOT_THERE") is None


def test_environment_wins_over_dotenv(
    config_elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable set in the environment takes precedence over the same one in .env."""
    monkeypatch.setenv("MY_RP_KEY", SECRET)
    assert load(config_elsewhere).secret("MY_RP_KEY") == SECRET


@pytest.mark.parametrize(
    ("in_env", "in_dotenv"),
    [(True, False), (False, True), (True, True)],
    ids=["env", "dotenv", "both"],
)
def test_effective_yaml_never_contains_secret(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, in_env: bool, in_dotenv: bool
) -> None:
    """effective_yaml shows the key only as 'set (from VAR)', never its value."""
    write_config(isolated, rp_instances("https://rp.example.org"))
    if in_dotenv:
        (isolated / ".env").write_text(f"RP_API_KEY={DOTENV_SECRET}\n")
    if in_env:
        monkeypatch.setenv("RP_API_KEY", SECRET)
    text = effective_yaml(load())
    assert "set (from RP_API_KEY)" in text
    assert SECRET not in text
    assert DOTENV_SECRET not in text
    assert "TOPSECRET" not in text


def test_effective_yaml_reports_missing_key(isolated: Path) -> None:
    """With the key variable unset, effective_yaml says NOT SET."""
    write_config(isolated, rp_instances("https://rp.example.org"))
    text = effective_yaml(load())
    assert "api_key: NOT SET" in text
    assert "set (from" not in text


def test_effective_yaml_hides_history_url_password(isolated: Path) -> None:
    """A password inside history.url is not printed by effective_yaml (config.show)."""
    path = write_config(isolated, "history:\n  url: postgresql://tv:hunter2pw@db.example.org/tv\n")
    text = effective_yaml(load(path))
    assert "db.example.org" in text
    assert "hunter2pw" not in text


def test_effective_yaml_shows_derived_values(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """effective_yaml fills in derived paths, the label and the environment overrides."""
    monkeypatch.setenv("TV_COMPONENT_NAME", "lbl")
    text = effective_yaml(load())
    cwd = isolated.resolve()
    assert f"state: {cwd / '.testviper'}" in text
    assert f"url: sqlite:///{cwd / '.testviper' / 'history.sqlite'}" in text
    assert "run_label: lbl" in text
    assert "run label: TV_COMPONENT_NAME" in text


# --- the shipped sample -----------------------------------------------------------------


def test_sample_text_loads_as_config(isolated: Path) -> None:
    """The commented sample shipped in the package is itself a valid configuration."""
    path = write_config(isolated, sample_text())
    settings = load(path)
    assert settings.path == path
    assert settings.project_name == "my-project"


def test_sample_text_shows_the_defaults(isolated: Path) -> None:
    """Apart from the project name, every value in the sample equals the built-in default."""
    settings = load(write_config(isolated, sample_text()))
    assert settings.config.model_dump(exclude={"project"}) == Config().model_dump(
        exclude={"project"}
    )
