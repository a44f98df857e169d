"""Small geometry, unit-conversion and text helpers used by the TestViper example."""

from shapes.geometry import Circle, Rectangle, Triangle
from shapes.units import convert_length

__all__ = ["Circle", "Rectangle", "Triangle", "convert_length"]
__version__ = "0.1.0"
