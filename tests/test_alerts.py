"""Alerts: real HTTP servers on 127.0.0.1 acting as Slack and a generic webhook."""

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, clean_env, write_files
from local_http import Handler, LocalServer

from testviper import config as config_module
from testviper.errors import UserError
from testviper.ops import alerts

TOKEN = "T000/B000/XXXXsecrettokenXXXX"


class Hook:
    """A webhook server answering from a script of (status, headers, body) replies."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.default = (200, {}, b"ok")
        self.requests: list[dict] = []
        hook = self

        class Answer(Handler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                hook.requests.append(
                    {"path": self.path, "body": json.loads(self.rfile.read(length))}
                )
                status, headers, body = hook.replies.pop(0) if hook.replies else hook.default
                self.reply(status, body, None, headers)

        self.local = LocalServer(Answer)
        self.url = f"{self.local.base}/services/{TOKEN}"

    def close(self) -> None:
        self.local.close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """
    project:
      name: calc
    alerts:
      dedup_minutes: 60
      backoff: 0.01
      max_backoff: 0.02
      max_retry_after: 0.05
      channels:
        - name: slack
          type: slack
          url_env: TV_TEST_SLACK_URL
          min_severity: warning
          retries: 2
        - name: hook
          type: webhook
          url_env: TV_TEST_HOOK_URL
          min_severity: critical
          retries: 2
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    write_files(tmp_path, {"testviper.yaml": CONFIG})
    return tmp_path


def load(proj: Path) -> config_module.Settings:
    return config_module.load(proj / "testviper.yaml", check_paths=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, hook: Hook) -> Hook:
    monkeypatch.setenv("TV_TEST_SLACK_URL", hook.url)
    monkeypatch.setenv("TV_TEST_HOOK_URL", hook.url + "/generic")
    return hook


def test_slack_and_webhook_success(proj: Path, env: Hook) -> None:
    outcomes = alerts.notify(load(proj), "critical", "Gate failed", "coverage 71% < 80%")
    assert [(o.channel, o.status, o.attempts) for o in outcomes] == [
        ("slack", "sent", 1),
        ("hook", "sent", 1),
    ]
    slack, generic = env.requests
    assert slack["body"] == {"text": "[CRITICAL] Gate failed\ncoverage 71% < 80%"}
    assert generic["path"].endswith("/generic")
    assert generic["body"]["severity"] == "critical"
    assert generic["body"]["title"] == "Gate failed"
    assert generic["body"]["project"] == "calc"


def test_severity_filter(proj: Path, env: Hook) -> None:
    outcomes = alerts.notify(load(proj), "warning", "Backlog", "3 entries")
    assert [(o.channel, o.status) for o in outcomes] == [("slack", "sent"), ("hook", "filtered")]
    info = alerts.notify(load(proj), "info", "FYI")
    assert {o.status for o in info} == {"filtered"}
    assert len(env.requests) == 1


def test_dedup_within_window_and_not_after(proj: Path, env: Hook) -> None:
    s = load(proj)
    t0 = 1_000_000.0
    first = alerts.notify(s, "warning", "Daily failed", "step gate", channel="slack", now=t0)
    assert first[0].status == "sent"
    again = alerts.notify(
        s, "warning", "Daily failed", "step gate", channel="slack", now=t0 + 59 * 60
    )
    assert again[0].status == "deduplicated"
    other = alerts.notify(s, "warning", "Daily failed", "step sync", channel="slack", now=t0 + 60)
    assert other[0].status == "sent"  # a different alert is not suppressed
    later = alerts.notify(
        s, "warning", "Daily failed", "step gate", channel="slack", now=t0 + 61 * 60
    )
    assert later[0].status == "sent"
    assert len(env.requests) == 3
    assert (s.state_dir / alerts.SENT_FILE).stat().st_mode & 0o777 == 0o600


def test_failed_send_is_not_deduplicated(proj: Path, env: Hook) -> None:
    s = load(proj)
    env.replies = [(400, {}, b"invalid_payload")]
    assert alerts.notify(s, "warning", "X", channel="slack")[0].status == "failed"
    assert alerts.notify(s, "warning", "X", channel="slack")[0].status == "sent"


def test_429_honours_retry_after_then_succeeds(proj: Path, env: Hook) -> None:
    env.replies = [(429, {"Retry-After": "30"}, b"rate limited")]
    delays: list[float] = []
    (outcome,) = alerts.notify(load(proj), "warning", "X", channel="slack", sleep=delays.append)
    assert (outcome.status, outcome.attempts) == ("sent", 2)
    assert delays == [0.05]  # Retry-After 30 s, capped by alerts.max_retry_after


def test_retry_after_parsing() -> None:
    assert alerts.retry_after("5", 60) == 5
    assert alerts.retry_after("120", 60) == 60
    assert alerts.retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 60) == 0  # in the past
    assert alerts.retry_after("soon", 60) is None
    assert alerts.retry_after(None, 60) is None


def test_500_retried_with_backoff(proj: Path, env: Hook) -> None:
    env.replies = [(500, {}, b"oops"), (503, {}, b"busy")]
    delays: list[float] = []
    (outcome,) = alerts.notify(load(proj), "warning", "X", channel="slack", sleep=delays.append)
    assert (outcome.status, outcome.attempts) == ("sent", 3)
    assert delays == [0.01, 0.02]


def test_400_not_retried(proj: Path, env: Hook) -> None:
    env.replies = [(400, {}, b"no_text"), (200, {}, b"ok")]
    (outcome,) = alerts.notify(load(proj), "warning", "X", channel="slack", sleep=lambda _: None)
    assert (outcome.status, outcome.attempts, outcome.detail) == ("failed", 1, "HTTP 400")
    assert len(env.requests) == 1


def test_slack_200_without_ok_is_a_failure(proj: Path, env: Hook) -> None:
    env.replies = [(200, {}, b"something else")]
    (outcome,) = alerts.notify(load(proj), "warning", "X", channel="slack")
    assert outcome.status == "failed" and outcome.attempts == 1


def test_connection_refused_retried_then_reported(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    monkeypatch.setenv("TV_TEST_SLACK_URL", url)
    delays: list[float] = []
    (outcome,) = alerts.notify(load(proj), "warning", "X", channel="slack", sleep=delays.append)
    assert outcome.status == "failed"
    assert outcome.attempts == 3  # retries: 2
    assert "connection error" in outcome.detail and "gave up after 3 attempts" in outcome.detail
    assert TOKEN not in outcome.line()
    assert len(delays) == 2


def test_missing_url_and_insecure_url_are_config_errors(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TV_TEST_SLACK_URL", raising=False)
    with pytest.raises(UserError, match="TV_TEST_SLACK_URL is not set"):
        alerts.notify(load(proj), "warning", "X", channel="slack")
    monkeypatch.setenv("TV_TEST_SLACK_URL", "http://hooks.example.org/x")
    with pytest.raises(UserError, match="use https://"):
        alerts.notify(load(proj), "warning", "X", channel="slack")


def test_secrets_masked_in_messages(proj: Path, env: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    text = f"posting to {env.url} with Authorization: Bearer abc.def.ghi"
    alerts.notify(load(proj), "warning", "Leak?", text, channel="slack")
    sent = env.requests[0]["body"]["text"]
    assert TOKEN not in sent and "abc.def.ghi" not in sent
    assert "***" in sent


# The CLI: `inv alert.test`.


def cli_env(hook: Hook, **extra: str) -> dict[str, str]:
    return clean_env(TV_TEST_SLACK_URL=hook.url, TV_TEST_HOOK_URL=hook.url + "/generic", **extra)


def test_alert_test_sends_to_every_channel(proj: Path, hook: Hook, cli: Cli) -> None:
    """The test message ignores min_severity and the dedup window."""
    for _ in range(2):
        done = cli("alert.test", cwd=proj, env=cli_env(hook))
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["slack: sent", "hook: sent"]
    assert len(hook.requests) == 4
    assert hook.requests[0]["body"]["text"].startswith("[INFO] TestViper alert test")


def test_alert_test_one_channel_and_failure_exit_1(proj: Path, hook: Hook, cli: Cli) -> None:
    hook.default = (400, {}, b"bad")
    done = cli("alert.test", "--channel", "hook", cwd=proj, env=cli_env(hook))
    assert done.returncode == 1
    assert done.stdout.strip() == "hook: failed (HTTP 400)"
    assert "alert not delivered to hook" in done.stderr
    assert len(hook.requests) == 1


def test_alert_test_masks_the_url(proj: Path, hook: Hook, cli: Cli) -> None:
    done = cli(
        "alert.test",
        "--channel",
        "slack",
        "--message",
        f"url={hook.url}",
        cwd=proj,
        env=cli_env(hook),
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN not in json.dumps([r["body"] for r in hook.requests])
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env_extra", "fragment"),
    [
        ({"TV_TEST_SLACK_URL": ""}, "TV_TEST_SLACK_URL is not set"),
        ({"TV_TEST_SLACK_URL": "http://hooks.example.org/services/x"}, "use https://"),
        ({"TV_TEST_SLACK_URL": "ftp://127.0.0.1/x"}, "does not hold an http(s) URL"),
    ],
)
def test_alert_test_bad_url_exit_2(
    proj: Path, hook: Hook, cli: Cli, env_extra: dict[str, str], fragment: str
) -> None:
    env = cli_env(hook)
    env.update(env_extra)
    done = cli("alert.test", cwd=proj, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert fragment in done.stderr
    assert hook.requests == []  # nothing is sent while any channel is misconfigured


def test_url_in_config_is_a_config_error(tmp_path: Path, cli: Cli) -> None:
    write_files(
        tmp_path,
        {
            "testviper.yaml": """
                alerts:
                  channels:
                    - name: s
                      type: slack
                      url_env: https://hooks.slack.com/services/T0/B0/abc
            """
        },
    )
    done = cli("alert.test", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "not the URL itself" in done.stderr
    assert "hooks.slack.com/services/T0/B0/abc" not in done.stderr


def test_unknown_channel_and_no_channels(proj: Path, hook: Hook, cli: Cli, tmp_path: Path) -> None:
    done = cli("alert.test", "--channel", "nope", cwd=proj, env=cli_env(hook))
    assert done.returncode == 2 and "no channel named 'nope'" in done.stderr
    empty = tmp_path / "empty"
    write_files(empty, {"testviper.yaml": "project:\n  name: x\n"})
    done = cli("alert.test", cwd=empty)
    assert done.returncode == 2 and "no channels configured" in done.stderr
