"""Ray on Spark, and Spark on Ray (RayDP mode).

``ls ray_on_spark/`` draws the system:

* ``api``          -- setup_ray_cluster / shutdown_ray_cluster / ray_cluster / active_cluster (validation)
* ``global_cluster`` -- setup_global_ray_cluster's lock, published address/token, blocking wait
* ``cluster``      -- RayClusterOnSpark, the owner of one cluster's processes and barrier job
* ``autoscale``, ``autoscaler_provider`` -- autoscaling: the driver's node launcher, and the node provider Ray's autoscaler loads
* ``worker_task``  -- the barrier Spark task body that runs one Ray worker node
* ``supervisor``   -- the per-node process that owns a Ray node's process tree
* ``resources``    -- pure arithmetic: memory shares, GPUs, strict mode
* ``options``      -- pure: ray start option conversion and validation
* ``ports``, ``procs``, ``gcs``, ``spark_env`` -- small helpers
* ``spark_on_ray``  -- init_spark / stop_spark and SparkOnRay, the owner of a Spark-on-Ray cluster
* ``spark_worker_actor`` -- the Ray actor that hosts one Spark executor (a standalone Worker)
* ``spark_on_ray_plan`` -- pure: init_spark's argument checks, bundles and Spark confs
* ``cds``            -- class-data archives that make the Spark JVMs of init_spark start faster
* ``jit``            -- JIT thresholds for those JVMs: less C2 work while they start
* ``dataset``       -- from_spark / to_spark: DataFrame <-> ray.data.Dataset through the object store
* ``local_standalone`` -- a Spark standalone cluster on 127.0.0.1 (tests, demo, benchmarks)

Attributes are imported lazily so that the supervisor (``python -m
ray_on_spark.supervisor``), which runs on every executor, does not import Spark or Ray.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "setup_ray_cluster": "ray_on_spark.api",
    "shutdown_ray_cluster": "ray_on_spark.api",
    "setup_global_ray_cluster": "ray_on_spark.api",
    "connect_global_cluster": "ray_on_spark.global_cluster",
    "ray_cluster": "ray_on_spark.api",
    "active_cluster": "ray_on_spark.api",
    "MAX_NUM_WORKER_NODES": "ray_on_spark.api",
    "RayClusterOnSpark": "ray_on_spark.cluster",
    "RayOnSparkError": "ray_on_spark.cluster",
    "init_spark": "ray_on_spark.spark_on_ray",
    "stop_spark": "ray_on_spark.spark_on_ray",
    "active_spark": "ray_on_spark.spark_on_ray",
    "SparkOnRay": "ray_on_spark.spark_on_ray",
    "from_spark": "ray_on_spark.dataset",
    "to_spark": "ray_on_spark.dataset",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ray_on_spark' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover
    from ray_on_spark.api import (  # noqa: F401
        MAX_NUM_WORKER_NODES,
        active_cluster,
        ray_cluster,
        setup_global_ray_cluster,
        setup_ray_cluster,
        shutdown_ray_cluster,
    )
    from ray_on_spark.global_cluster import connect_global_cluster  # noqa: F401
    from ray_on_spark.cluster import RayClusterOnSpark, RayOnSparkError  # noqa: F401
    from ray_on_spark.dataset import from_spark, to_spark  # noqa: F401
    from ray_on_spark.spark_on_ray import SparkOnRay, active_spark, init_spark, stop_spark  # noqa: F401
