"""Conversions between common length and temperature units."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

# Factors to metres; everything converts through metres so adding a unit
# only needs one entry here.
_METRES_PER_UNIT: dict[str, float] = {
    "mm": 0.001,
    "cm": 0.01,
    "m": 1.0,
    "km": 1000.0,
    "in": 0.0254,
    "ft": 0.3048,
    "mi": 1609.344,
}


def supported_units() -> list[str]:
    """Return the length units understood by :func:`convert_length`."""
    return sorted(_METRES_PER_UNIT)


def convert_length(value: float, from_unit: str, to_unit: str) -> float:
    """Convert ``value`` from ``from_unit`` to ``to_unit``.

    Raises ValueError for unknown units.
    """
    for unit in (from_unit, to_unit):
        if unit not in _METRES_PER_UNIT:
            raise ValueError(f"unknown length unit {unit!r}")
    if from_unit == to_unit:
        return value
    result = value * _METRES_PER_UNIT[from_unit] / _METRES_PER_UNIT[to_unit]
    logger.debug("converted %s %s -> %s %s", value, from_unit, result, to_unit)
    return result


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert degrees Celsius to degrees Fahrenheit."""
    if celsius < -273.15:
        raise ValueError("temperature below absolute zero")
    return celsius * 9 / 5 + 32


def fahrenheit_to_celsius(fahrenheit: float) -> float:
    """Convert degrees Fahrenheit to degrees Celsius."""
    if fahrenheit < -459.67:
        raise ValueError("temperature below absolute zero")
    return (fahrenheit - 32) * 5 / 9
