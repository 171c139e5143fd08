"""Ray's own entry points -- ``ray.data.from_spark(df)`` and ``Dataset.to_spark(spark)`` -- through our conversion.

RayDP's README starts with them, and Ray implements both by importing RayDP: without RayDP
they raise ``ModuleNotFoundError: No module named 'raydp'``.  While a Spark-on-Ray session
or a Ray-on-Spark cluster of this library runs, they go through :func:`ray_on_spark.from_spark`
and :func:`ray_on_spark.to_spark` instead (``override_num_blocks`` and ``parallelism`` are
honoured), so a RayDP notebook runs after changing its import only.

When RayDP is installed, Ray's functions are left as they are (they call RayDP, as their
users expect).  ``RAY_ON_SPARK_RAY_DATA_ENTRY_POINTS=0`` leaves them alone too.  The last of
the sessions and clusters to stop puts Ray's own functions back.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence

from ray_on_spark.runtime.switches import switched_on

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession
    from ray.data import Dataset

logger = logging.getLogger(__name__)

#: Switch: "0"/"off" leaves ray.data.from_spark and Dataset.to_spark as Ray ships them.
ENV = "RAY_ON_SPARK_RAY_DATA_ENTRY_POINTS"

_LOCK = threading.Lock()
_users = 0
_originals: Dict[str, Any] = {}


def raydp_installed() -> bool:
    return importlib.util.find_spec("raydp") is not None


def _from_spark(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def from_spark(df: "DataFrame", *, parallelism: Optional[int] = None,
                   override_num_blocks: Optional[int] = None) -> "Dataset":
        from ray_on_spark.data.api import from_spark as ours

        return ours(df, parallelism, override_num_blocks=override_num_blocks)

    from_spark.__doc__ = "ray_on_spark's from_spark (RayDP is not installed).\n\n" + (original.__doc__ or "")
    return from_spark


def _to_spark(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def to_spark(self: "Dataset", spark: "SparkSession") -> "DataFrame":
        from ray_on_spark.data.api import to_spark as ours

        return ours(self, spark)

    to_spark.__doc__ = "ray_on_spark's to_spark (RayDP is not installed).\n\n" + (original.__doc__ or "")
    return to_spark


def install() -> bool:
    """Route Ray's entry points through ours (module doc) for one more user; False when left alone.

    When ``ray.data`` is not imported yet, it is not imported here (about a second of CPU,
    on a cluster's start-up path): its functions are replaced the moment it is imported.
    """
    global _users
    if not switched_on(ENV) or raydp_installed():
        return False
    with _LOCK:
        _users += 1
        if _users == 1:
            if "ray.data" in sys.modules:
                _patch()
            else:
                sys.meta_path.insert(0, _FINDER)
    return True


def uninstall() -> None:
    """One user fewer (a session or cluster stopped); the last puts Ray's own functions back."""
    global _users
    with _LOCK:
        if _users == 0:
            return
        _users -= 1
        if _users == 0:
            if _FINDER in sys.meta_path:
                sys.meta_path.remove(_FINDER)
            if _originals:
                _unpatch()


def _patch() -> None:
    """Replace Ray's functions with ours (``ray.data`` is imported; the caller holds the lock)."""
    import ray.data
    import ray.data.read_api
    from ray.data import Dataset

    _originals.update(from_spark=ray.data.from_spark, read_api_from_spark=ray.data.read_api.from_spark,
                      to_spark=Dataset.__dict__["to_spark"])
    ray.data.from_spark = ray.data.read_api.from_spark = _from_spark(_originals["read_api_from_spark"])
    Dataset.to_spark = _to_spark(_originals["to_spark"])
    logger.debug("ray.data.from_spark and Dataset.to_spark go through ray_on_spark (RayDP is not installed)")


def _unpatch() -> None:
    import ray.data
    import ray.data.read_api
    from ray.data import Dataset

    ray.data.from_spark = _originals["from_spark"]
    ray.data.read_api.from_spark = _originals["read_api_from_spark"]
    Dataset.to_spark = _originals["to_spark"]
    _originals.clear()


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``ray.data`` as Python would, and patches it as soon as its module has run."""

    def find_spec(self, name: str, path: Optional[Sequence[str]], target: Any = None) -> Any:
        if name != "ray.data":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run_module(module)
            with _LOCK:
                if _users and not _originals:
                    _patch()
                if _FINDER in sys.meta_path:
                    sys.meta_path.remove(_FINDER)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


_FINDER = _PatchOnImport()
