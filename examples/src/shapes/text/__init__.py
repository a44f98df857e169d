"""Text helpers for labelling shapes."""

from shapes.text.slug import slugify, truncate, unique_slug

__all__ = ["slugify", "truncate", "unique_slug"]
