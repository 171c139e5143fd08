"""A separate virtualenv for RayDP 1.6.5, the library the benchmarks compare against.

RayDP 1.6.5 pins ``pyspark<=3.5.7``, so the RayDP side (``raydp_side.py``) runs in a venv of its
own.  ``ensure_raydp_venv()`` creates it once (and reuses it while it still imports the pinned
versions) and returns the path of its python.  ``ensure_raydp_venv(with_ours=True)`` also
installs this checkout of ray_on_spark there (editable, no dependencies: the venv's pyspark
3.5.7 and Ray stay), so that the benchmarks measure ours on pyspark 3.5 beside RayDP on the
same pyspark.

Location: ``$RAY_ON_SPARK_RAYDP_VENV``, else ``~/.cache/ray_on_spark/raydp-1.6.5-venv``.

Usage::

    python benchmarks/raydp_venv.py          # creates it if needed, prints its python
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

log = logging.getLogger(__name__)

RAYDP_VERSION = "1.6.5"
PYSPARK_VERSION = "3.5.7"
# The same Ray as the main venv, so that both sides of a benchmark run on the same Ray;
# RayDP 1.6.5 (ray>=2.37) works on it.
RAY_VERSION = "2.60.0"

# ray[data] 2.60 needs pandas>=2.2.3 and pyarrow>=17; pyspark 3.5's Arrow/pandas paths are
# happy with those, but not with numpy 2 everywhere, hence numpy 1.26.
REQUIREMENTS = [
    f"raydp=={RAYDP_VERSION}",
    f"pyspark=={PYSPARK_VERSION}",
    f"ray[default,data]=={RAY_VERSION}",
    "pyarrow==17.0.0",
    "pandas==2.2.3",
    "numpy==1.26.4",
    "psutil",
]

# What a working venv must report; anything else and it is (re)installed.
_CHECK = (
    "import raydp, ray, pyspark, pyarrow, pandas, psutil, ray.data;"
    "from importlib.metadata import version;"
    f"assert version('raydp') == {RAYDP_VERSION!r}, version('raydp');"
    f"assert pyspark.__version__ == {PYSPARK_VERSION!r}, pyspark.__version__;"
    f"assert ray.__version__ == {RAY_VERSION!r}, ray.__version__;"
    "print('ok')"
)


def venv_dir() -> str:
    return os.environ.get("RAY_ON_SPARK_RAYDP_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "ray_on_spark", f"raydp-{RAYDP_VERSION}-venv"
    )


def _python(path: str) -> str:
    return os.path.join(path, "Scripts" if os.name == "nt" else "bin", "python")


def _works(python: str) -> bool:
    if not os.path.exists(python):
        return False
    r = subprocess.run([python, "-c", _CHECK], capture_output=True, text=True)
    if r.returncode != 0:
        log.info("RayDP venv at %s is not usable yet: %s", python, r.stderr.strip()[-500:])
    return r.returncode == 0 and r.stdout.strip().endswith("ok")


def _run(cmd: list[str]) -> None:
    log.info("running: %s", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(
            f"creating the RayDP venv failed: `{' '.join(cmd)}` exited {r.returncode}\n"
            f"{(r.stdout + r.stderr)[-4000:]}"
        )


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_ours(python: str) -> bool:
    r = subprocess.run([python, "-c", "import ray_on_spark, os; print(os.path.dirname(os.path.dirname("
                                      "os.path.abspath(ray_on_spark.__file__))))"],
                       capture_output=True, text=True, cwd="/")
    return r.returncode == 0 and os.path.samefile(r.stdout.strip(), REPO)


def ensure_raydp_venv(with_ours: bool = False) -> str:
    """Create (once) the RayDP 1.6.5 venv and return the path of its python (module doc)."""
    path = venv_dir()
    python = _python(path)
    if _works(python):
        log.info("reusing the RayDP venv at %s", path)
        if with_ours and not _has_ours(python):
            _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", REPO])
        return python
    if not os.path.exists(python):
        log.info("creating the RayDP venv at %s", path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        _run([sys.executable, "-m", "venv", path])
    _run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    _run([python, "-m", "pip", "install", "--quiet", *REQUIREMENTS])
    if not _works(python):
        raise RuntimeError(f"the RayDP venv at {path} was installed but does not import: {_CHECK}")
    if with_ours:
        _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "-e", REPO])
    log.info("RayDP venv ready: %s", python)
    return python


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    print(ensure_raydp_venv())
