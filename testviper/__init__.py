"""TestViper: run pytest with coverage once, keep every result, report it, gate on it."""

__version__ = "0.1.0"
