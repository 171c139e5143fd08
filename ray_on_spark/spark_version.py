"""Which pyspark this library runs on: 3.5.x and 4.x, checked when the package is imported.

Why both: Databricks' long-term-support runtimes (15.4 LTS, 16.4 LTS) run Spark 3.5 and
every RayDP release pins ``pyspark<=3.5.7``; Spark 4 is where new clusters start.  Where the
two differ (``to_arrow_schema``'s arguments, pyspark's ``StatusTracker``), the difference is
guarded by capability in :mod:`ray_on_spark.spark_env` and :mod:`ray_on_spark.data`, never by
comparing versions at the call site.

The check reads pyspark's ``version.py`` next to its ``__init__`` without importing pyspark
(importing it costs ~0.3 s, and the supervisor on every executor imports this package
without needing Spark).  When pyspark is not installed, or lives in a zip (``spark-submit``
with ``SPARK_HOME/python/lib/pyspark.zip``), nothing is checked here; pyspark's own import
then says what is missing.  Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Optional, Tuple

from ray_on_spark.errors import UnsupportedSparkVersionError

#: The pyspark versions this library is tested on, as pip would write them.
SUPPORTED = ">=3.5,<5"
#: What the tests run on (``make test`` runs the suite once per line; see the README).
TESTED = ("3.5 (latest 3.5.x)", "4.x (latest)")


def parse(version: str) -> Tuple[int, int]:
    """``"3.5.9"`` -> ``(3, 5)``; ``"4.1.0.dev0"`` -> ``(4, 1)``. ValueError when it names no version."""
    m = re.match(r"\s*(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"not a version: {version!r}")
    return int(m.group(1)), int(m.group(2))


def is_supported(version: str) -> bool:
    major, minor = parse(version)
    return (major, minor) >= (3, 5) and major < 5


def check(version: str) -> None:
    """Raise :class:`UnsupportedSparkVersionError` naming ``version`` and what works, unless it is supported."""
    if not is_supported(version):
        raise UnsupportedSparkVersionError(
            f"ray_on_spark needs pyspark {SUPPORTED} (tested: {', '.join(TESTED)}); this Python has pyspark "
            f"{version}. Install a supported one, e.g. pip install 'pyspark{SUPPORTED}' (Databricks: runtime 15.4 LTS "
            f"or later)."
        )


def installed() -> Optional[str]:
    """The installed pyspark's version, read from its ``version.py``; None when that cannot be read."""
    try:
        spec = importlib.util.find_spec("pyspark")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            m = re.search(r"__version__[^=]*=\s*['\"]([^'\"]+)['\"]", f.read())
    except OSError:
        return None
    return m.group(1) if m else None


def check_installed() -> None:
    """:func:`check` the installed pyspark, when its version can be read (module doc)."""
    version = installed()
    if version is not None:
        check(version)
