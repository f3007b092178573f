"""When a metric score counts, and when one beats another: the registry's ``best`` pointer and
a sweep's best trial use the same rule."""

from __future__ import annotations

import math
from typing import Any, Literal


def finite(value: Any) -> float | None:
    """``value`` as a score: a finite int/float, else None (missing, NaN, inf, not a number)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def beats(new: float | None, old: float | None, mode: Literal["max", "min"]) -> bool:
    """Strictly better; a missing (or NaN) ``new`` never beats anything, and anything beats a
    missing ``old`` (callers pass scores through ``finite``, which turns NaN into missing)."""
    if new is None:
        return False
    if old is None:
        return True
    return new > old if mode == "max" else new < old
