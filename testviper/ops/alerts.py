"""Alerts: Slack-compatible and generic JSON webhooks, with a severity filter and dedup.

A channel's URL comes from the environment variable named by ``url_env`` (or ``.env``),
never from the config file. Only https is accepted, except to loopback. The same alert
(channel, severity, title, text) is sent at most once per ``alerts.dedup_minutes``: the
times of sent alerts are kept in ``<state>/alerts-sent.json``, so a cron job failing
every hour pages once. Retries happen only on connection errors, 429 (its Retry-After
honoured up to ``max_retry_after``) and 5xx, with exponential backoff capped at
``max_backoff``; any other answer is final.
"""

import email.utils
import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from testviper.config import AlertChannel, Settings, _is_loopback
from testviper.errors import UserError
from testviper.fsutil import atomic_write
from testviper.reporter.masking import Masker, masker_for

SEVERITIES = {"info": 0, "warning": 1, "critical": 2}
SENT_FILE = "alerts-sent.json"


@dataclass
class Outcome:
    channel: str
    status: str  # sent | failed | deduplicated | filtered | disabled
    detail: str = ""
    attempts: int = 0

    def line(self) -> str:
        text = f"{self.channel}: {self.status}"
        return f"{text} ({self.detail})" if self.detail else text


class _Retry(Exception):
    def __init__(self, detail: str, delay: float | None = None) -> None:
        super().__init__(detail)
        self.delay = delay


class _Final(Exception):
    pass


def channel_url(settings: Settings, channel: AlertChannel) -> str:
    """The channel's URL from the environment, validated; UserError (exit 2) if unusable."""
    where = f"alerts.channels[{channel.name}]"
    url = settings.secret(channel.url_env)
    if not url:
        raise UserError(
            f"{where}: environment variable {channel.url_env} is not set; "
            "export it (or put it in .env) with the webhook URL"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{where}: {channel.url_env} does not hold an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UserError(
            f"{where}: {channel.url_env} is an http:// URL to a non-loopback host; "
            "use https:// (the URL is a secret)"
        )
    return url


def select(settings: Settings, name: str | None = None) -> list[AlertChannel]:
    channels = settings.config.alerts.channels
    if name is not None:
        channels = [c for c in channels if c.name == name]
        if not channels:
            known = ", ".join(c.name for c in settings.config.alerts.channels) or "none"
            raise UserError(f"alerts: no channel named '{name}' (configured: {known})")
    elif not channels:
        raise UserError("alerts: no channels configured; add alerts.channels to the config")
    return channels


def masker(settings: Settings) -> Masker:
    """Masks ReportPortal keys and every alert URL that is set."""
    base = masker_for(settings)
    urls = [settings.secret(c.url_env) for c in settings.config.alerts.channels]
    return Masker([*base.secrets, *urls])


def retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), at most ``cap``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), cap)


def payload(channel: AlertChannel, severity: str, title: str, text: str, project: str) -> bytes:
    if channel.type == "slack":
        body: dict[str, Any] = {"text": f"[{severity.upper()}] {title}\n{text}".rstrip()}
    else:
        body = {
            "severity": severity,
            "title": title,
            "text": text,
            "project": project,
            "host": socket.gethostname(),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    return json.dumps(body).encode()


def _post_once(channel: AlertChannel, url: str, data: bytes, cap: float) -> None:
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=channel.timeout) as response:
            status, body = response.status, response.read(4096)
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status == 429:
            raise _Retry("HTTP 429", retry_after(exc.headers.get("Retry-After"), cap)) from None
        if status >= 500:
            raise _Retry(f"HTTP {status}") from None
        raise _Final(f"HTTP {status}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
        reason = getattr(exc, "reason", exc)
        raise _Retry(f"connection error: {reason}") from None
    if not 200 <= status < 300:
        raise _Final(f"HTTP {status}")
    if channel.type == "slack" and (status != 200 or body.strip() != b"ok"):
        raise _Final(f"HTTP {status} without 'ok' in the body")


def post(
    settings: Settings,
    channel: AlertChannel,
    url: str,
    data: bytes,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Send with the retry rules; never raises for network trouble."""
    cfg = settings.config.alerts
    attempts = 0
    while True:
        attempts += 1
        try:
            _post_once(channel, url, data, cfg.max_retry_after)
        except _Final as exc:
            return Outcome(channel.name, "failed", str(exc), attempts)
        except _Retry as exc:
            if attempts > channel.retries:
                return Outcome(
                    channel.name, "failed", f"{exc}, gave up after {attempts} attempts", attempts
                )
            delay = exc.delay
            if delay is None:
                delay = min(cfg.backoff * 2 ** (attempts - 1), cfg.max_backoff)
            sleep(delay)
        else:
            return Outcome(channel.name, "sent", "", attempts)


def _sent_path(settings: Settings) -> Path:
    return settings.state_dir / SENT_FILE


def _load_sent(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}


def dedup_key(channel: str, severity: str, title: str, text: str) -> str:
    return hashlib.sha256("\0".join((channel, severity, title, text)).encode()).hexdigest()[:32]


def notify(
    settings: Settings,
    severity: str,
    title: str,
    text: str = "",
    channel: str | None = None,
    test: bool = False,
    now: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Outcome]:
    """Send an alert to every matching channel; one outcome per channel.

    Configuration problems (URL missing or insecure, unknown channel) raise UserError
    before anything is sent. Messages are masked (RP keys, alert URLs, tokens). A
    ``test`` message skips the severity filter and the dedup window.
    """
    dedup = not test
    if severity not in SEVERITIES:
        raise UserError(f"alerts: unknown severity '{severity}' (info, warning or critical)")
    channels = select(settings, channel)
    urls = {c.name: channel_url(settings, c) for c in channels if c.enabled}
    mask = masker(settings)
    title, text = mask(title), mask(text)
    window = settings.config.alerts.dedup_minutes * 60
    now = time.time() if now is None else now
    path = _sent_path(settings)
    sent = _load_sent(path) if dedup else {}
    outcomes = []
    changed = False
    for ch in channels:
        if not ch.enabled:
            outcomes.append(Outcome(ch.name, "disabled"))
            continue
        if not test and SEVERITIES[severity] < SEVERITIES[ch.min_severity]:
            outcomes.append(Outcome(ch.name, "filtered", f"below min_severity {ch.min_severity}"))
            continue
        key = dedup_key(ch.name, severity, title, text)
        last = sent.get(key)
        if dedup and last is not None and now - last < window:
            ago = int((now - last) // 60)
            outcomes.append(Outcome(ch.name, "deduplicated", f"same alert sent {ago} min ago"))
            continue
        data = payload(ch, severity, title, text, settings.project_name or "")
        outcome = post(settings, ch, urls[ch.name], data, sleep)
        outcome.detail = mask(outcome.detail)
        outcomes.append(outcome)
        if outcome.status == "sent" and dedup:
            sent[key] = now
            changed = True
    if changed:
        # Entries older than the window can never suppress anything again.
        sent = {k: v for k, v in sent.items() if now - v < window}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(sent, indent=1, sort_keys=True), mode=0o600)
    return outcomes
