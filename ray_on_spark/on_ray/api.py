"""Spark on Ray's public entry points: ``init_spark`` / ``stop_spark`` (RayDP's arguments) and ``active_spark``.

All arguments are checked (:mod:`ray_on_spark.on_ray.plan`) before anything starts. The
only module state is the one live session (``_ACTIVE``), which ``atexit`` stops.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

from ray_on_spark import spark_env
from ray_on_spark.errors import ClusterAlreadyRunningError
from ray_on_spark.on_ray.plan import check_fits, check_reserve_timeout, plan_executors
from ray_on_spark.on_ray.session import SparkOnRay

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession
    from ray.util.placement_group import PlacementGroup

logger = logging.getLogger(__name__)

__all__ = ["active_spark", "init_spark", "stop_spark"]

_ACTIVE: Optional[SparkOnRay] = None
_LOCK = threading.RLock()


def init_spark(
    app_name: str,
    num_executors: int,
    executor_cores: int,
    executor_memory: Union[str, int],
    enable_hive: bool = False,
    fault_tolerant_mode: bool = True,
    placement_group_strategy: Optional[str] = None,
    placement_group: Optional["PlacementGroup"] = None,
    placement_group_bundle_indexes: Optional[Sequence[int]] = None,
    configs: Optional[Mapping[str, object]] = None,
    *,
    reserve_timeout_s: Optional[float] = None,
) -> "SparkSession":
    """Start a SparkSession whose executors live in Ray actors (RayDP's ``init_spark`` arguments).

    Connects to Ray first if needed (``ray.init()``, which honours ``RAY_ADDRESS``).  All
    arguments are checked before anything starts; on a failed start everything started
    is stopped again.  Returns the SparkSession; :func:`stop_spark` ends it.

    The arguments and their order are RayDP 1.6's.  ``fault_tolerant_mode`` (RayDP: converted
    data is owned by an actor that outlives the executors, so a Dataset survives an executor's
    loss) is accepted and changes nothing here: converted blocks are always owned by the
    data holder's block owners, never by executors (:mod:`ray_on_spark.data.holders`).

    With ``configs={"spark.dynamicAllocation.enabled": "true", ...}`` Spark's own allocation
    manager decides how many executors run, from ``num_executors`` (0 allowed) up to
    ``spark.dynamicAllocation.maxExecutors``: executor actors start as Spark asks (waiting while
    Ray lacks room) and idle ones stop, returning their resources to Ray
    (:mod:`ray_on_spark.on_ray.dynamic`).  No placement group is used then.

    ``reserve_timeout_s`` (ours, keyword only): how long to wait for Ray to place every executor's
    bundle when it lacks room now (other actors hold it), logging what it waits for; then a
    clear error.  Default 30 s, and a request larger than the whole Ray cluster is refused at
    once.  Given explicitly, the cluster is taken to be able to grow (an autoscaler adds nodes):
    such a request is waited for, up to that long, instead of refused.
    """
    reserve_timeout = check_reserve_timeout(reserve_timeout_s)
    if not isinstance(fault_tolerant_mode, bool):
        raise TypeError(f"fault_tolerant_mode={fault_tolerant_mode!r} must be True or False (RayDP's default: True)")
    global _ACTIVE
    plan = plan_executors(
        app_name, num_executors, executor_cores, executor_memory, configs, placement_group_strategy,
        placement_group_bundle_indexes, has_placement_group=placement_group is not None, enable_hive=enable_hive,
    )
    from pyspark.sql import SparkSession

    spark_env.refuse_spark_connect(SparkSession.getActiveSession(), "init_spark")
    with _LOCK:
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        check_fits(plan, ray.cluster_resources(), [n["Resources"].get("CPU", 0.0) for n in nodes],
                   may_grow=reserve_timeout_s is not None)
        if placement_group is not None and max(plan.bundle_indexes or [0]) >= placement_group.bundle_count:
            raise ValueError(
                f"placement_group_bundle_indexes={plan.bundle_indexes} name bundles the placement group does not "
                f"have (it has {placement_group.bundle_count}); use indexes below {placement_group.bundle_count}."
            )
        if _ACTIVE is not None:
            raise ClusterAlreadyRunningError(
                f"a Spark-on-Ray session ({_ACTIVE.plan.app_name!r}) is already running; call "
                "ray_on_spark.stop_spark() first."
            )
        cluster = SparkOnRay(plan, placement_group, reserve_timeout=reserve_timeout)
        try:
            spark = cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _ACTIVE = cluster
        return spark


def stop_spark(cleanup_data: bool = True) -> None:
    """Stop the Spark-on-Ray session; with ``cleanup_data=False`` converted Datasets stay readable."""
    global _ACTIVE
    with _LOCK:
        cluster, _ACTIVE = _ACTIVE, None
        if cluster is not None:
            cluster.stop(cleanup_data=cleanup_data)


def active_spark() -> Optional[SparkOnRay]:
    """The running Spark-on-Ray cluster, if any."""
    return _ACTIVE


@atexit.register
def _stop_at_exit() -> None:
    try:
        stop_spark()
    except Exception as e:
        logger.warning("stopping Spark on Ray at exit failed: %s", e)
