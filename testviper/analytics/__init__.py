"""Trends and figures over the history (plain functions; no task framework imports)."""

from testviper.analytics.core import Analytics, Window, analyse, make_window, parse_since
from testviper.analytics.stats import Series, mad, slope

__all__ = ["Analytics", "Series", "Window", "analyse", "mad", "make_window", "parse_since", "slope"]
