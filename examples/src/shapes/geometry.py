"""Areas and perimeters of simple plane shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _require_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number greater than zero."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Circle:
    """A circle given by its radius."""

    radius: float

    def __post_init__(self) -> None:
        _require_positive("radius", self.radius)

    def area(self) -> float:
        """Return the area of the circle."""
        return math.pi * self.radius**2

    def perimeter(self) -> float:
        """Return the circumference of the circle."""
        return 2 * math.pi * self.radius


@dataclass(frozen=True)
class Rectangle:
    """An axis-aligned rectangle given by width and height."""

    width: float
    height: float

    def __post_init__(self) -> None:
        _require_positive("width", self.width)
        _require_positive("height", self.height)

    def area(self) -> float:
        """Return the area of the rectangle."""
        return self.width * self.height

    def perimeter(self) -> float:
        """Return the perimeter of the rectangle."""
        return 2 * (self.width + self.height)

    def is_square(self) -> bool:
        """Return True when both sides are equal (within float tolerance)."""
        return math.isclose(self.width, self.height)


@dataclass(frozen=True)
class Triangle:
    """A triangle given by the lengths of its three sides."""

    a: float
    b: float
    c: float

    def __post_init__(self) -> None:
        for name, side in (("a", self.a), ("b", self.b), ("c", self.c)):
            _require_positive(name, side)
        longest = max(self.a, self.b, self.c)
        # A degenerate triangle (zero area) is rejected too, hence >=.
        if longest >= self.a + self.b + self.c - longest:
            raise ValueError(f"sides {self.a}, {self.b}, {self.c} violate the triangle inequality")

    def perimeter(self) -> float:
        """Return the sum of the three sides."""
        return self.a + self.b + self.c

    def area(self) -> float:
        """Return the area using Heron's formula."""
        s = self.perimeter() / 2
        return math.sqrt(s * (s - self.a) * (s - self.b) * (s - self.c))

    def kind(self) -> str:
        """Classify the triangle as equilateral, isosceles or scalene."""
        unique = len({self.a, self.b, self.c})
        if unique == 1:
            return "equilateral"
        if unique == 2:
            return "isosceles"
        return "scalene"
