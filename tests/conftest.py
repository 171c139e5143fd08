"""Shared by tests/unit and tests/integration: ``helpers`` (real processes, never mocks) is importable.

Two pyspark lines are tested (``make test``): the whole suite on pyspark 4, and on pyspark 3.5
every integration test except those marked ``any_spark`` -- tests of what does not depend on
pyspark's version (the CLI's plumbing, the Spark UI's texts, the README's examples, separate
drivers' processes). A test that touches pyspark's API, Spark's JVM classes or the conversion's
Arrow data must not carry the mark.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "any_spark: independent of the pyspark version; runs on the main pyspark (4.x) only"
    )


def pytest_report_header(config):
    try:
        import pyspark
    except ImportError:
        return "pyspark: not installed"
    return f"pyspark: {pyspark.__version__}"
