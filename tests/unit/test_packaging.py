"""A real install (``pip install .``, not editable) carries the package data the library reads at run time.

The executors' Arrow writer is a ``.java`` file compiled when from_spark first runs; a
wheel without it would fail only then, on a user's cluster. Here the package is installed
into a fresh directory and imported from there alone.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_pip_install_without_editable_ships_the_java_writer(tmp_path):
    source, target = tmp_path / "src", tmp_path / "site"
    source.mkdir()  # a copy of what a source distribution holds, so the build leaves nothing in the checkout
    shutil.copy(ROOT / "setup.py", source)
    shutil.copytree(ROOT / "ray_on_spark", source / "ray_on_spark", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    code = (
        "import ray_on_spark.data.jvm_writer as w, ray_on_spark; "
        "print(ray_on_spark.__file__); print(len(w.java_source())); "
        "print('class RayOnSparkArrowFileWriter' in w.java_source())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out[0].startswith(str(target)), out  # imported from the install, not from the checkout
    assert int(out[1]) > 5000 and out[2] == "True"
