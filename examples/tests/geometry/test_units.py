"""Tests for length and temperature conversions."""

from __future__ import annotations

import logging

import pytest
from shapes.units import celsius_to_fahrenheit, convert_length, fahrenheit_to_celsius

logger = logging.getLogger(__name__)


@pytest.mark.smoke
@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        (1, "km", "m", 1000),
        (12, "in", "ft", 1),
        (250, "cm", "cm", 250),
    ],
)
def test_convert_length(value: float, from_unit: str, to_unit: str, expected: float) -> None:
    assert convert_length(value, from_unit, to_unit) == pytest.approx(expected)


def test_convert_length_rejects_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unknown length unit 'furlong'"):
        convert_length(1, "m", "furlong")


def test_conversion_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="shapes.units")
    logger.info("converting a marathon distance to miles")
    miles = convert_length(42.195, "km", "mi")
    logger.info("marathon is %.2f miles", miles)
    assert miles == pytest.approx(26.219, abs=1e-3)
    assert any("km -> " in record.getMessage() for record in caplog.records)


def test_temperature_round_trip() -> None:
    assert celsius_to_fahrenheit(100) == 212
    assert fahrenheit_to_celsius(celsius_to_fahrenheit(37)) == pytest.approx(37)
