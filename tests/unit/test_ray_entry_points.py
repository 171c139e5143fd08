"""Ray's entry points (ray.data.from_spark, Dataset.to_spark) are routed through ours without importing ray.data early.

Each check runs in a fresh interpreter: whether ``ray.data`` is imported yet is the point.
"""

from __future__ import annotations

import subprocess
import sys

LAZY = """
import sys
from ray_on_spark.data import ray_entry_points as ep
assert ep.install()
assert "ray.data" not in sys.modules, "install() imported ray.data"
import ray.data
assert ray.data.from_spark.__doc__.startswith("ray_on_spark's"), ray.data.from_spark
assert ray.data.read_api.from_spark is ray.data.from_spark
assert ray.data.Dataset.to_spark.__doc__.startswith("ray_on_spark's")
assert ep.install()  # a second user
ep.uninstall()
assert ray.data.from_spark.__doc__.startswith("ray_on_spark's"), "the first user still needs them"
ep.uninstall()
assert not (ray.data.from_spark.__doc__ or "").startswith("ray_on_spark's")
assert not (ray.data.Dataset.to_spark.__doc__ or "").startswith("ray_on_spark's")
assert ep._FINDER not in sys.meta_path
print("OK")
"""

UNUSED = """
import sys
from ray_on_spark.data import ray_entry_points as ep
ep.install()
ep.uninstall()  # the cluster stopped before anyone imported ray.data
assert ep._FINDER not in sys.meta_path
import ray.data
assert not (ray.data.from_spark.__doc__ or "").startswith("ray_on_spark's")
print("OK")
"""


def _run(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-3000:]


def test_the_entry_points_are_replaced_when_ray_data_is_imported_after_setup_and_restored_by_the_last_user():
    _run(LAZY)


def test_a_stop_before_ray_data_is_imported_leaves_ray_s_own_functions():
    _run(UNUSED)
