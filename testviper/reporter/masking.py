"""Mask secrets in text that leaves for ReportPortal or reaches the terminal.

Test output routinely contains what the environment holds: a failing test that prints
its configuration, a captured ``requests`` debug log with an ``Authorization`` header.
Before a log message, attribute or description is sent, every value of a configured
``api_key_env`` variable that is set is replaced, and so are ``Bearer <token>`` and
``api_key=<value>`` patterns, whatever their origin.
"""

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
# Values shorter than this are not masked by value: "1" or "yes" would mangle every text.
MIN_SECRET = 4
BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
KEY_ASSIGNMENT = re.compile(r"(?i)\b(api[_-]?key[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;]+")


class Masker:
    """Replaces the given secret values and token-looking patterns with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return self.mask(text)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = BEARER.sub(rf"\g<1>{MASK}", text)
        return KEY_ASSIGNMENT.sub(rf"\g<1>{MASK}", text)

    def attributes(self, attrs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Attributes with key and value masked (a value never becomes blank: RP rejects that)."""
        out = []
        for attr in attrs:
            masked = dict(attr)
            for field in ("key", "value"):
                if isinstance(masked.get(field), str):
                    masked[field] = self.mask(masked[field]) or MASK
            out.append(masked)
        return out


def masker_for(settings: Any) -> Masker:
    """A masker for every configured instance's key variable that is set."""
    names = {inst.api_key_env for inst in settings.config.reportportal.instances}
    return Masker(settings.secret(name) for name in sorted(names))
