"""The library's on/off environment variables, read one way for all (``RAY_ON_SPARK_CDS=0`` ...)."""

from __future__ import annotations

import os
from typing import Optional

OFF_VALUES = ("0", "false", "no", "off")


def switched_on_value(value: Optional[str]) -> bool:
    """An on/off variable's value (unset: on); "0", "false", "no", "off" turn it off."""
    return (value or "1").strip().lower() not in OFF_VALUES


def switched_on(name: str) -> bool:
    """Whether the environment variable ``name`` leaves its feature on (it is on unless turned off)."""
    return switched_on_value(os.environ.get(name))
