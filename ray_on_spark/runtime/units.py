"""Memory sizes: parsing what users and Spark confs write (``2g``, ``512MB``), and printing them.

Pure functions, shared by both directions and the executors' side.
"""

from __future__ import annotations

import math
import re

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": 1024 * GIB, "p": 1024 * 1024 * GIB}


def parse_memory(value: object, *, name: str = "memory", default_unit: str = "") -> int:
    """Parse ``1g``, ``512m``, ``2GB``, ``1.5GiB`` or an int number of bytes.

    Spark's size strings (``spark.executor.memory=1g``) mean MiB when they carry no
    unit, which is why the caller can pass ``default_unit="m"`` for Spark confs.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not a memory size; use bytes or a string like '2g'.")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name}={value!r} is negative; use a size like 2147483648 or '2g'.")
        return value * _UNITS[default_unit.lower()]
    if isinstance(value, float) and value >= 0 and math.isfinite(value):
        return int(value * _UNITS[default_unit.lower()])
    if isinstance(value, str):
        m = _MEMORY_RE.match(value)
        if m:
            number, unit, _ = m.groups()
            unit = unit.lower() if unit else ("" if m.group(3) else default_unit.lower())
            return int(float(number) * _UNITS[unit])
    raise ValueError(
        f"{name}={value!r} is not a memory size; use bytes (e.g. 2147483648) or a string like '2g' or '512MB'."
    )


def format_bytes(n: int) -> str:
    """Human-readable size used in error messages and logs."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, *, name: str = "duration", default_unit: str = "s") -> float:
    """Seconds in a Spark time string (``10min``, ``600s``, ``1h``, ``500ms``) or a number of ``default_unit``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and math.isfinite(value):
        return float(value) * _DURATION_UNITS[default_unit]
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or default_unit).lower()]
    raise ValueError(f"{name}={value!r} is not a duration; use a Spark time string like '10min', '600s' or '1h'.")
