"""Ray on Spark, and Spark on Ray (RayDP mode).

``ls ray_on_spark/`` draws the system: one package per direction, the data conversion
between them, and a shared runtime beneath; neither direction imports the other.

* ``on_spark/``   -- Ray on Spark: setup_ray_cluster and the cluster it starts (api, arguments, plan,
                     resources, ray_start, cluster, worker_task, hooks, databricks, progress,
                     global_cluster, autoscaling/)
* ``on_ray/``     -- Spark on Ray: init_spark and the session it starts (api, plan, session,
                     executor_actor, cds, jit)
* ``data/``       -- from_spark / to_spark: DataFrame <-> Dataset through Ray's object store (api, holders,
                     spark_arrow, jvm_writer + java/, python_workers)
* ``runtime/``    -- standard library + psutil only, runs on every host: supervisor, supervised, procs,
                     ports, waiting, private, host, restarts, switches, units
* ``testing/``    -- a real Spark standalone cluster on 127.0.0.1 for tests, demo and benchmarks
* ``errors``      -- RayOnSparkError and its typed subclasses
* ``spark_env``   -- the one seam to pyspark's JVM (``_jvm``/``_jsc``/``_jdf``), spark_home, java_env, and the
                     guards where pyspark 3.5 and 4.x differ
* ``spark_version`` -- the pyspark versions that work (>=3.5,<5), checked on import
* ``_ray``        -- the one seam to Ray's internals (GCS client, token environment, Ray Data internals)
* ``cli``         -- ``python -m ray_on_spark`` / ``ray-on-spark``: start, status, check, submit
* ``check``       -- check_distribution(): does every node run work?
* ``demo``        -- ``python -m ray_on_spark.demo``
* ``__main__``    -- runs ``cli``

Attributes are imported lazily so that the supervisor (``python -m
ray_on_spark.runtime.supervisor``), which runs on every executor, imports neither Spark nor Ray.
Importing the package on a pyspark it does not support raises
:class:`~ray_on_spark.errors.UnsupportedSparkVersionError` (an ``ImportError``) naming the
versions that work.
"""

from typing import TYPE_CHECKING, Any

from ray_on_spark.spark_version import check_installed as _check_pyspark

__version__ = "0.1.0"

_check_pyspark()

_EXPORTS = {
    "setup_ray_cluster": "ray_on_spark.on_spark.api",
    "shutdown_ray_cluster": "ray_on_spark.on_spark.api",
    "setup_global_ray_cluster": "ray_on_spark.on_spark.api",
    "connect_global_cluster": "ray_on_spark.on_spark.global_cluster",
    "ray_cluster": "ray_on_spark.on_spark.api",
    "active_cluster": "ray_on_spark.on_spark.api",
    "MAX_NUM_WORKER_NODES": "ray_on_spark.on_spark.arguments",
    "RayClusterOnSpark": "ray_on_spark.on_spark.cluster",
    "RayOnSparkError": "ray_on_spark.errors",
    "init_spark": "ray_on_spark.on_ray.api",
    "stop_spark": "ray_on_spark.on_ray.api",
    "active_spark": "ray_on_spark.on_ray.api",
    "SparkOnRay": "ray_on_spark.on_ray.session",
    "from_spark": "ray_on_spark.data.api",
    "check_distribution": "ray_on_spark.check",
    "to_spark": "ray_on_spark.data.api",
    "release_converted_data": "ray_on_spark.data.api",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ray_on_spark' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from ray_on_spark.check import check_distribution  # noqa: F401
    from ray_on_spark.data.api import from_spark, release_converted_data, to_spark  # noqa: F401
    from ray_on_spark.errors import RayOnSparkError  # noqa: F401
    from ray_on_spark.on_ray.api import active_spark, init_spark, stop_spark  # noqa: F401
    from ray_on_spark.on_ray.session import SparkOnRay  # noqa: F401
    from ray_on_spark.on_spark.api import (  # noqa: F401
        active_cluster,
        ray_cluster,
        setup_global_ray_cluster,
        setup_ray_cluster,
        shutdown_ray_cluster,
    )
    from ray_on_spark.on_spark.arguments import MAX_NUM_WORKER_NODES  # noqa: F401
    from ray_on_spark.on_spark.cluster import RayClusterOnSpark  # noqa: F401
    from ray_on_spark.on_spark.global_cluster import connect_global_cluster  # noqa: F401
