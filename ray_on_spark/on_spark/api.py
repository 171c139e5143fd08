"""Public entry points, argument-compatible with Ray 2.60's ``ray.util.spark``.

Everything the user passes is validated here, before any process starts; each error
names the argument, the value given, and a value that would work.  The only module
state is the registry of the one live cluster (``_ACTIVE``), which ``atexit`` shuts down.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple

from ray_on_spark import _ray, spark_env
from ray_on_spark.errors import ClusterAlreadyRunningError, HeadStartError, RayOnSparkError
from ray_on_spark.on_spark import arguments, databricks, global_cluster, hooks, plan, progress
from ray_on_spark.on_spark.arguments import MAX_NUM_WORKER_NODES
from ray_on_spark.on_spark.cluster import ClusterState, RayClusterOnSpark
from ray_on_spark.on_spark.resources import executor_footprint_bytes
from ray_on_spark.runtime import host

if TYPE_CHECKING:  # pragma: no cover
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_NUM_WORKER_NODES", "active_cluster", "ray_cluster", "setup_global_ray_cluster", "setup_ray_cluster",
    "shutdown_ray_cluster",
]

_ACTIVE: Optional[RayClusterOnSpark] = None
#: (lock, state dir) while the active cluster is this process's global cluster.
_GLOBAL_LOCK: Optional[Tuple["global_cluster.GlobalLock", str]] = None
_ACTIVE_LOCK = threading.RLock()


def _writable_dir(name: str, path: object, hint: str) -> Optional[str]:
    """An absolute directory path, created if missing and really writable, or a ValueError naming ``name``."""
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name}={path!r} must be a directory path; {hint}.")
    path = os.path.abspath(path)
    try:  # really try: os.access() says yes to root even on read-only file systems
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{name}={path!r} is not writable by this user ({e.strerror}); {hint}.") from None
    return path


def _check_log_dir(path: Optional[str]) -> Optional[str]:
    """collect_log_to_path: every node copies its logs there, so it must be writable (and shared)."""
    return _writable_dir("collect_log_to_path", path, "pass a writable directory that every Spark node can "
                         "reach, e.g. a shared mount such as '/dbfs/ray_logs'")


def _check_temp_root(path: Optional[str]) -> Optional[str]:
    return _writable_dir("ray_temp_root_dir", path, "pass a writable directory, e.g. ray_temp_root_dir='/tmp'")


def setup_ray_cluster(
    *,
    max_worker_nodes: int,
    min_worker_nodes: Optional[int] = None,
    num_cpus_worker_node: Optional[int] = None,
    num_cpus_head_node: Optional[int] = None,
    num_gpus_worker_node: Optional[int] = None,
    num_gpus_head_node: Optional[int] = None,
    memory_worker_node: Optional[int] = None,
    memory_head_node: Optional[int] = None,
    object_store_memory_worker_node: Optional[int] = None,
    object_store_memory_head_node: Optional[int] = None,
    head_node_options: Optional[Dict] = None,
    worker_node_options: Optional[Dict] = None,
    ray_temp_root_dir: Optional[str] = None,
    strict_mode: bool = False,
    collect_log_to_path: Optional[str] = None,
    autoscale_upscaling_speed: Optional[float] = 1.0,
    autoscale_idle_timeout_minutes: Optional[float] = 1.0,
    **kwargs: Any,
) -> Tuple[str, str]:
    """Start a Ray cluster on the active Spark application; same arguments as Ray's.

    Returns ``(address, remote_connection_address)`` like ``ray.util.spark``:
    ``ray.init()`` (no address) connects to the new cluster afterwards.
    """
    cluster = _setup(
        max_worker_nodes=max_worker_nodes,
        min_worker_nodes=min_worker_nodes,
        num_cpus_worker_node=num_cpus_worker_node,
        num_cpus_head_node=num_cpus_head_node,
        num_gpus_worker_node=num_gpus_worker_node,
        num_gpus_head_node=num_gpus_head_node,
        memory_worker_node=memory_worker_node,
        memory_head_node=memory_head_node,
        object_store_memory_worker_node=object_store_memory_worker_node,
        object_store_memory_head_node=object_store_memory_head_node,
        head_node_options=head_node_options,
        worker_node_options=worker_node_options,
        ray_temp_root_dir=ray_temp_root_dir,
        strict_mode=strict_mode,
        collect_log_to_path=collect_log_to_path,
        autoscale_upscaling_speed=autoscale_upscaling_speed,
        autoscale_idle_timeout_minutes=autoscale_idle_timeout_minutes,
        **kwargs,
    )
    assert cluster.address is not None and cluster.client_address is not None
    return cluster.address, cluster.client_address


def _setup(**kwargs: Any) -> RayClusterOnSpark:
    """Check, plan, start; the head's port race is retried once with new ports (:class:`HeadStartError`)."""
    global _ACTIVE
    progress.show_in_notebook()
    with _ACTIVE_LOCK:
        spark, cluster_plan, hook = _plan(**kwargs)
        for attempt in (1, 2):
            cluster = RayClusterOnSpark(spark, cluster_plan, hook)
            _ACTIVE = cluster
            try:
                cluster.start()
                return cluster
            except HeadStartError as e:
                _ACTIVE = None
                # The head's ports are chosen free a moment before Ray binds them; another
                # process can take one in between.
                if attempt == 1:
                    logger.warning("Ray head failed to start (%s); retrying once with new ports", str(e)[:200])
                    continue
                raise
            except BaseException:
                _ACTIVE = None
                raise
        raise AssertionError("unreachable")


def _plan(**kwargs: Any) -> Tuple["SparkSession", plan.ClusterPlan, Any]:
    """Check everything and decide every number (:mod:`ray_on_spark.on_spark.plan`); start nothing.

    The order: the arguments alone, the start hook, this process's state, then the Spark
    application. Returns the session, the plan and the start hook.
    """
    args = arguments.check_arguments(known_options=_ray.ray_start_option_names,
                                     host_memory=host.driver_host_memory_bytes(), **kwargs)
    host.driver_shm_bytes()  # a bad RAY_ON_SPARK_DRIVER_SHARED_MEMORY_BYTES is refused now
    hook = hooks.load_start_hook(args.is_global)
    temp_root = args.ray_temp_root_dir
    if temp_root is None and not args.is_global:
        temp_root = hooks.call(hook, "get_default_temp_root_dir")
    args = dataclasses.replace(
        args,
        collect_log_to_path=_check_log_dir(args.collect_log_to_path),
        ray_temp_root_dir=_check_temp_root(temp_root),
    )
    if _ACTIVE is not None and _ACTIVE.state in (ClusterState.STARTING, ClusterState.RUNNING):
        raise ClusterAlreadyRunningError(
            f"A Ray cluster on Spark is already running ({_ACTIVE.address}); call "
            "ray_on_spark.shutdown_ray_cluster() before setting up another."
        )
    import ray

    if ray.is_initialized():
        raise RayOnSparkError(
            "This Python process is already connected to Ray (ray.init() was called); call ray.shutdown() "
            "before setup_ray_cluster(), then ray.init() again afterwards to connect to the new cluster."
        )
    spark = spark_env.active_spark()
    sc = spark.sparkContext
    if spark_env.master_kind(sc.master) == "unsupported":
        raise RayOnSparkError(
            f"Spark master {sc.master!r} is not supported; use Spark standalone (spark://...), local-cluster[...] or local[N]."
        )
    facts = _spark_facts(sc)
    # Right after getOrCreate() executors are still registering (one may be seconds behind
    # another): while the app is younger than Spark's own registration window, wait for the
    # slots to appear. In an older app a request that does not fit is refused at once.
    wait = 0.0 if facts.master_kind == "local" else plan.registration_wait(
        spark_env.registration_window_s(sc), time.time() - sc.startTime / 1000.0)
    if facts.executor_cores is None and args.num_cpus_worker_node is None:
        facts = dataclasses.replace(facts, executor_cores=_executor_cores_from_slots(sc, facts, wait))
    shape = plan.worker_shape(args, facts)
    _, head_addresses, head_gpus = plan.head_cpus_gpus(args, facts)  # checked before waiting for slots
    if head_gpus and not head_addresses:
        logger.warning("num_gpus_head_node=%d: the driver has no Spark GPU addresses (spark.driver.resource.gpu.*), "
                       "so the head gets %d GPU(s) by count, as in Ray: no addresses were assigned to it", head_gpus, head_gpus)
    profile = spark_env.task_resource_profile(shape.num_cpus, shape.num_gpus) if shape.use_task_profile else None
    slots = spark_env.wait_for_slots(sc, max(1, args.max_worker_nodes), profile, wait)
    slot_facts = plan.SlotFacts(slots=slots, executors=spark_env.executor_count(sc),
                                default_profile_slots=spark_env.max_concurrent_tasks(sc) if slots == 0 else 0)
    cluster_plan = plan.plan_cluster(args, facts, shape, slot_facts)
    node_env = hooks.environment(hook)
    if host.slow_storage_allowed():  # Ray's switch reaches every node (its object store may pass /dev/shm)
        node_env.setdefault(host.ALLOW_SLOW_STORAGE_ENV, os.environ[host.ALLOW_SLOW_STORAGE_ENV])
    return spark, dataclasses.replace(cluster_plan, node_env=node_env), hook


def _executor_cores_from_slots(sc: "SparkContext", facts: plan.SparkFacts, wait: float) -> Optional[int]:
    """An executor's cores when spark.executor.cores is unset (standalone: the whole worker): its task
    slots x spark.task.cpus, averaged over the registered executors (waiting up to ``wait`` for one)."""
    if not facts.stage_level_scheduling:  # a node is then one task, whatever an executor has
        return None
    slots = spark_env.wait_for_slots(sc, 1, None, wait)
    executors = spark_env.executor_count(sc)
    return max(1, slots * facts.task_cpus // executors) if slots and executors else None


def _executor_env_overrides(sc: "SparkContext") -> Dict[str, str]:
    """The RAY_ON_SPARK_WORKER_* variables set for the executors (``spark.executorEnv.*``), checked now,
    before anything starts (a worker host reads them again from its own environment)."""
    env = {name: value for name in (host.WORKER_CPU_CORES_ENV, host.WORKER_GPU_NUM_ENV, host.WORKER_PHYSICAL_MEMORY_ENV,
                                    host.WORKER_SHARED_MEMORY_ENV)
           if (value := spark_env.conf_get(sc, f"spark.executorEnv.{name}")) is not None}
    host.worker_host_memory_bytes(env)
    host.worker_shm_bytes(env)
    return env


def _spark_facts(sc: "SparkContext") -> plan.SparkFacts:
    """What the plan needs to know of the running application."""
    memory = spark_env.executor_memory(sc)
    overrides = _executor_env_overrides(sc)
    return plan.SparkFacts(
        master_kind=spark_env.master_kind(sc.master),
        task_cpus=spark_env.task_cpus(sc),
        task_gpus=int(spark_env.task_gpus(sc)),
        executor_gpus_configured=spark_env.conf_get(sc, "spark.executor.resource.gpu.amount") is not None,
        dynamic_allocation=spark_env.dynamic_allocation(sc),
        driver_gpu_addresses=tuple(spark_env.driver_gpu_addresses(sc)),
        driver_host=_ray.resolve_ip_for_localhost(spark_env.driver_host(sc)),
        driver_host_cpus=os.cpu_count() or 1,
        executor_footprint=executor_footprint_bytes(memory.heap, memory.overhead, memory.overhead_factor,
                                                    memory.pyspark),
        driver_memory=spark_env.driver_memory(sc),
        on_databricks=databricks.in_databricks_runtime(),
        executor_cores=spark_env.executor_cores_conf(sc),
        executor_gpus=spark_env.executor_gpu_amount(sc),
        worker_cpus_override=host.env_count(host.WORKER_CPU_CORES_ENV, overrides, minimum=1),
        worker_gpus_override=host.env_count(host.WORKER_GPU_NUM_ENV, overrides),
    )


def setup_global_ray_cluster(
    *,
    max_worker_nodes: int,
    is_blocking: bool = True,
    min_worker_nodes: Optional[int] = None,
    num_cpus_worker_node: Optional[int] = None,
    num_cpus_head_node: Optional[int] = None,
    num_gpus_worker_node: Optional[int] = None,
    num_gpus_head_node: Optional[int] = None,
    memory_worker_node: Optional[int] = None,
    memory_head_node: Optional[int] = None,
    object_store_memory_worker_node: Optional[int] = None,
    object_store_memory_head_node: Optional[int] = None,
    head_node_options: Optional[Dict] = None,
    worker_node_options: Optional[Dict] = None,
    strict_mode: bool = False,
    collect_log_to_path: Optional[str] = None,
    autoscale_upscaling_speed: Optional[float] = 1.0,
    autoscale_idle_timeout_minutes: Optional[float] = 1.0,
) -> Optional[str]:
    """A cluster shared by many drivers (Ray 2.60's arguments; see :mod:`ray_on_spark.global_cluster`).

    Only one runs per user and host (a file lock, checked before anything starts).
    ``is_blocking=True`` serves until Ctrl-C or SIGTERM and then shuts the cluster down;
    ``is_blocking=False`` returns the address and leaves it to ``shutdown_ray_cluster()``.
    The head gets the driver host's CPUs and the driver's Spark GPUs unless told otherwise.
    """
    global _GLOBAL_LOCK
    if not isinstance(is_blocking, bool):
        raise ValueError(f"is_blocking={is_blocking!r} must be True or False.")
    directory = global_cluster.state_dir()
    lock = global_cluster.GlobalLock(directory)
    lock.acquire()
    try:
        cluster = _setup(
            max_worker_nodes=max_worker_nodes, min_worker_nodes=min_worker_nodes,
            num_cpus_worker_node=num_cpus_worker_node, num_cpus_head_node=num_cpus_head_node,
            num_gpus_worker_node=num_gpus_worker_node, num_gpus_head_node=num_gpus_head_node,
            memory_worker_node=memory_worker_node, memory_head_node=memory_head_node,
            object_store_memory_worker_node=object_store_memory_worker_node,
            object_store_memory_head_node=object_store_memory_head_node,
            head_node_options=head_node_options, worker_node_options=worker_node_options,
            strict_mode=strict_mode, collect_log_to_path=collect_log_to_path,
            autoscale_upscaling_speed=autoscale_upscaling_speed,
            autoscale_idle_timeout_minutes=autoscale_idle_timeout_minutes,
            is_global=True,
        )
        global_cluster.publish(directory, cluster)
    except BaseException:
        global_cluster.unpublish(directory)
        lock.release()
        raise
    _GLOBAL_LOCK = (lock, directory)
    if not is_blocking:
        return cluster.address
    try:
        global_cluster.block_until_stopped(cluster)
    finally:
        shutdown_ray_cluster()
    return None


def shutdown_ray_cluster() -> None:
    """Shut down the active Ray cluster on Spark (no-op when there is none)."""
    global _ACTIVE, _GLOBAL_LOCK
    with _ACTIVE_LOCK:
        cluster, _ACTIVE = _ACTIVE, None
        owned, _GLOBAL_LOCK = _GLOBAL_LOCK, None
    try:
        if cluster is not None:
            from ray_on_spark.data.holders import release_holders

            release_holders()  # converted data goes with the cluster
            cluster.shutdown()
    finally:
        if owned is not None:  # a global cluster: other drivers must no longer find it
            lock, directory = owned
            global_cluster.unpublish(directory)
            lock.release()


def shutdown_if_active(cluster: RayClusterOnSpark) -> bool:
    """Shut ``cluster`` down if it is still the active one (a watcher's shutdown must not hit a newer cluster)."""
    with _ACTIVE_LOCK:
        if _ACTIVE is not cluster:
            return False
        shutdown_ray_cluster()
        return True


def active_cluster() -> Optional[RayClusterOnSpark]:
    """The running cluster object (``.address``, ``.dashboard_url``, ``.shutdown()``), or None."""
    c = _ACTIVE
    return c if c is not None and c.state == ClusterState.RUNNING else None


@contextlib.contextmanager
def ray_cluster(**kwargs: Any) -> Iterator[RayClusterOnSpark]:
    """``with ray_cluster(max_worker_nodes=2) as cluster:`` -- shut down on exit, even on error."""
    cluster = _setup(**kwargs)
    try:
        yield cluster
    finally:
        global _ACTIVE
        with _ACTIVE_LOCK:
            if _ACTIVE is cluster:
                _ACTIVE = None
        cluster.shutdown()


@atexit.register
def _shutdown_at_exit() -> None:
    try:
        shutdown_ray_cluster()
    except Exception as e:  # interpreter is exiting; log and move on
        logger.warning("shutting down the Ray cluster at exit failed: %s", e)

