"""The pyspark lines the package supports (3.5.x, 4.x) and the error on any other, raised on import."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import ray_on_spark
from ray_on_spark import spark_version
from ray_on_spark.errors import UnsupportedSparkVersionError


@pytest.mark.parametrize("version", ["3.5.0", "3.5.9", "4.0.0", "4.3.0", "4.1.0.dev0"])
def test_supported_versions_pass(version):
    spark_version.check(version)


@pytest.mark.parametrize("version", ["3.4.4", "3.3.0", "2.4.8", "5.0.0"])
def test_other_versions_are_refused_naming_what_works(version):
    with pytest.raises(UnsupportedSparkVersionError, match=rf"needs pyspark >=3\.5,<5 .*has pyspark {version}"):
        spark_version.check(version)


def test_the_installed_pyspark_is_read_without_importing_it():
    before = "pyspark" in sys.modules
    version = spark_version.installed()
    assert version is not None and spark_version.is_supported(version)
    assert ("pyspark" in sys.modules) == before


def _import_with_pyspark(tmp_path, version_py: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "pyspark"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "version.py").write_text(version_py)
    root = os.path.dirname(os.path.dirname(ray_on_spark.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), root]))
    return subprocess.run([sys.executable, "-c", "import ray_on_spark"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_importing_the_package_on_pyspark_3_4_raises_naming_the_versions_that_work(tmp_path):
    """An old pyspark install ahead on the path (a directory with its version.py, as pip lays it out)."""
    result = _import_with_pyspark(tmp_path, '__version__: str = "3.4.4"\n')
    assert result.returncode != 0
    assert "UnsupportedSparkVersionError" in result.stderr
    assert "needs pyspark >=3.5,<5" in result.stderr and "pyspark 3.4.4" in result.stderr


def test_importing_the_package_with_an_unreadable_pyspark_version_leaves_it_to_pyspark(tmp_path):
    result = _import_with_pyspark(tmp_path, "from somewhere import __version__\n")
    assert result.returncode == 0, result.stderr
