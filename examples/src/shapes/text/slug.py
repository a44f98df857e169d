"""Turn free text into URL-friendly slugs and shorten long labels."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^a-z0-9]+")


def slugify(text: str, separator: str = "-", max_length: int | None = None) -> str:
    """Return a lowercase ASCII slug of ``text``.

    Accented characters are folded to ASCII; everything else that is not a
    letter or digit becomes ``separator``.
    """
    if not separator:
        raise ValueError("separator must not be empty")
    # NFKD splits accents off their base letters so they can be dropped.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_WORD.sub(separator, ascii_text.lower()).strip(separator)
    if max_length is not None:
        if max_length < 1:
            raise ValueError("max_length must be at least 1")
        # Cut on a separator boundary so we never leave half a word.
        if len(slug) > max_length:
            cut = slug[:max_length]
            head, sep, _ = cut.rpartition(separator)
            slug = head if sep else cut
    return slug


def truncate(text: str, width: int, placeholder: str = "...") -> str:
    """Shorten ``text`` to at most ``width`` characters, ending with ``placeholder``."""
    if width < len(placeholder):
        raise ValueError("width must be at least the placeholder length")
    if len(text) <= width:
        return text
    return text[: width - len(placeholder)].rstrip() + placeholder


def unique_slug(text: str, taken: set[str], separator: str = "-") -> str:
    """Return a slug of ``text`` not in ``taken``, adding a numeric suffix if needed."""
    base = slugify(text, separator=separator)
    if base not in taken:
        return base
    counter = 2
    while f"{base}{separator}{counter}" in taken:
        counter += 1
    return f"{base}{separator}{counter}"
