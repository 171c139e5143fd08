"""Public entry points, argument-compatible with Ray 2.60's ``ray.util.spark``.

Everything the user passes is validated here, before any process starts; each error
names the argument, the value given, and a value that would work.  The only module
state is the registry of the one live cluster (``_ACTIVE``), which ``atexit`` shuts down.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
import sys
import threading
import time
import warnings
from typing import Dict, Iterator, Optional, Tuple

from ray_on_spark import gcs, global_cluster, spark_env
from ray_on_spark.cluster import (
    ClusterPlan,
    HeadPlan,
    RayClusterOnSpark,
    RayOnSparkError,
    make_temp_dir,
    new_cluster_id,
    pick_head_ports,
)
from ray_on_spark.options import HEAD_BLOCKED_KEYS, WORKER_BLOCKED_KEYS, ray_start_option_names, validate_node_options
from ray_on_spark.resources import InsufficientResourcesError, format_bytes, head_gpu_addresses, head_memory, parse_memory
from ray_on_spark.worker_task import WorkerPlan, host_memory_bytes

logger = logging.getLogger(__name__)

#: Same meaning as ``ray.util.spark.MAX_NUM_WORKER_NODES``: one node per available task slot.
MAX_NUM_WORKER_NODES = -1

_ACTIVE: Optional[RayClusterOnSpark] = None
#: (lock, state dir) while the active cluster is this process's global cluster.
_GLOBAL_LOCK: Optional[Tuple["global_cluster.GlobalLock", str]] = None
_ACTIVE_LOCK = threading.RLock()

_DEPRECATED = {
    "num_cpus_per_node": "num_cpus_worker_node",
    "num_gpus_per_node": "num_gpus_worker_node",
    "object_store_memory_per_node": "object_store_memory_worker_node",
}
_REMOVED = {
    "num_worker_nodes": "use max_worker_nodes (and min_worker_nodes) instead",
    "autoscale": "set min_worker_nodes < max_worker_nodes instead",
}


def _int_arg(name: str, value: object, minimum: int, example: int, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}, e.g. {name}={example}.")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}, e.g. {name}={example}.")
    return value


def _positive_number(name: str, value: object, default: float, zero_ok: bool) -> float:
    """autoscale_*: None means Ray's default; otherwise a finite number > 0 (or >= 0)."""
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value != float("inf")
    if not ok or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name}={value!r} must be a number {bound}, e.g. {name}={default}.")
    return float(value)


def _memory_arg(name: str, value: object) -> Optional[int]:
    if value is None:
        return None
    n = parse_memory(value, name=name)
    if n <= 0:
        raise ValueError(f"{name}={value!r} must be positive, e.g. {name}=2147483648 (2 GiB).")
    return n


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


#: Ray's deepest unix socket below ray_temp_root_dir on a worker node:
#: /ros-<8>-w<partition, 3>-<8>/r/session_<date>_<time>_<usec>_<pid, 7>/sockets/plasma_store
#: is 93 bytes, and a socket path may have at most 107.
MAX_TEMP_ROOT_CHARS = 107 - 93


def _check_temp_root(path: Optional[str]) -> Optional[str]:
    if isinstance(path, str) and path and len(os.path.abspath(path)) > MAX_TEMP_ROOT_CHARS:
        path = os.path.abspath(path)
        raise ValueError(
            f"ray_temp_root_dir={path!r} is {len(path)} characters; Ray's socket paths under it would exceed "
            f"the 107-byte limit of unix sockets. Use a path of at most {MAX_TEMP_ROOT_CHARS} characters, "
            "e.g. ray_temp_root_dir='/tmp' or '/local_disk0'."
        )
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
    **kwargs,
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
    return cluster.address, cluster.client_address


def _setup(**args) -> RayClusterOnSpark:
    global _ACTIVE
    with _ACTIVE_LOCK:
        for attempt in (1, 2):
            spark, plan = _plan(**args)
            cluster = RayClusterOnSpark(spark, plan)
            _ACTIVE = cluster
            try:
                cluster.start()
                return cluster
            except RayOnSparkError as e:
                _ACTIVE = None
                # The head's ports are chosen free a moment before Ray binds them; another
                # process can take one in between. That race is retried once, with new ports.
                if attempt == 1 and "head node failed to start" in str(e):
                    logger.warning("Ray head failed to start (%s); retrying once with new ports", str(e)[:200])
                    continue
                raise
            except BaseException:
                _ACTIVE = None
                raise
        raise AssertionError("unreachable")


def _plan(
    *,
    max_worker_nodes,
    min_worker_nodes=None,
    num_cpus_worker_node=None,
    num_cpus_head_node=None,
    num_gpus_worker_node=None,
    num_gpus_head_node=None,
    memory_worker_node=None,
    memory_head_node=None,
    object_store_memory_worker_node=None,
    object_store_memory_head_node=None,
    head_node_options=None,
    worker_node_options=None,
    ray_temp_root_dir=None,
    strict_mode=False,
    collect_log_to_path=None,
    autoscale_upscaling_speed=1.0,
    autoscale_idle_timeout_minutes=1.0,
    start_timeout: float = 120.0,
    is_global: bool = False,
    **kwargs,
):
    """Validate everything and decide every number; start nothing."""
    for old, new in _DEPRECATED.items():
        if old in kwargs:
            value = kwargs.pop(old)
            warnings.warn(f"'{old}' is deprecated, use '{new}' instead.", DeprecationWarning, stacklevel=3)
            if new == "num_cpus_worker_node":
                num_cpus_worker_node = value if num_cpus_worker_node is None else num_cpus_worker_node
            elif new == "num_gpus_worker_node":
                num_gpus_worker_node = value if num_gpus_worker_node is None else num_gpus_worker_node
            else:
                object_store_memory_worker_node = value if object_store_memory_worker_node is None else object_store_memory_worker_node
    for old, hint in _REMOVED.items():
        if old in kwargs:
            raise ValueError(f"'{old}' was removed from setup_ray_cluster: {hint}.")
    if kwargs:
        raise TypeError(f"setup_ray_cluster() got unexpected keyword argument(s) {sorted(kwargs)}.")

    # ---- plain argument checks (no Spark needed)
    if max_worker_nodes != MAX_NUM_WORKER_NODES:
        _int_arg("max_worker_nodes", max_worker_nodes, 1, 2, allow_none=False)
    if min_worker_nodes is not None:
        _int_arg("min_worker_nodes", min_worker_nodes, 0, 0)
        if max_worker_nodes != MAX_NUM_WORKER_NODES and min_worker_nodes > max_worker_nodes:
            raise ValueError(
                f"min_worker_nodes={min_worker_nodes} is more than max_worker_nodes={max_worker_nodes}; use "
                f"min_worker_nodes<={max_worker_nodes} (smaller autoscales between the two) or None (no autoscaling)."
            )
    autoscale_upscaling_speed = _positive_number("autoscale_upscaling_speed", autoscale_upscaling_speed, 1.0, zero_ok=False)
    autoscale_idle_timeout_minutes = _positive_number(
        "autoscale_idle_timeout_minutes", autoscale_idle_timeout_minutes, 1.0, zero_ok=True)
    num_cpus_worker_node = _int_arg("num_cpus_worker_node", num_cpus_worker_node, 1, 1)
    num_gpus_worker_node = _int_arg("num_gpus_worker_node", num_gpus_worker_node, 0, 0)
    num_cpus_head_node = _int_arg("num_cpus_head_node", num_cpus_head_node, 0, 0)
    num_gpus_head_node = _int_arg("num_gpus_head_node", num_gpus_head_node, 0, 0)
    memory_worker_node = _memory_arg("memory_worker_node", memory_worker_node)
    memory_head_node = _memory_arg("memory_head_node", memory_head_node)
    object_store_memory_worker_node = _memory_arg("object_store_memory_worker_node", object_store_memory_worker_node)
    object_store_memory_head_node = _memory_arg("object_store_memory_head_node", object_store_memory_head_node)
    if not isinstance(strict_mode, bool):
        raise ValueError(f"strict_mode={strict_mode!r} must be True or False.")
    collect_log_to_path = _check_log_dir(collect_log_to_path)
    temp_root = _check_temp_root(ray_temp_root_dir)
    known = ray_start_option_names()
    head_opts = validate_node_options(head_node_options, argument="head_node_options", blocked=HEAD_BLOCKED_KEYS, known=known)
    worker_opts = validate_node_options(worker_node_options, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS, known=known)
    host_total = host_memory_bytes()
    for name, value in (("memory_worker_node", memory_worker_node), ("object_store_memory_worker_node", object_store_memory_worker_node),
                        ("memory_head_node", memory_head_node), ("object_store_memory_head_node", object_store_memory_head_node)):
        if value is not None and value > host_total * 0.8:
            raise ValueError(
                f"{name}={value} ({format_bytes(value)}) is more than 80% of this host's memory "
                f"({format_bytes(host_total)}); use at most {int(host_total * 0.8)}."
            )

    # ---- state checks
    if _ACTIVE is not None and _ACTIVE.state in ("starting", "running"):
        raise RayOnSparkError(
            f"A Ray cluster on Spark is already running ({_ACTIVE.address}); call "
            "ray_on_spark.shutdown_ray_cluster() before setting up another."
        )
    import ray

    if ray.is_initialized():
        raise RayOnSparkError(
            "This Python process is already connected to Ray (ray.init() was called); call ray.shutdown() "
            "before setup_ray_cluster(), then ray.init() again afterwards to connect to the new cluster."
        )

    # ---- Spark checks
    spark = spark_env.active_spark()
    sc = spark.sparkContext
    kind = spark_env.master_kind(sc.master)
    if kind == "unsupported":
        raise RayOnSparkError(
            f"Spark master {sc.master!r} is not supported; use Spark standalone (spark://...), local-cluster[...] or local[N]."
        )
    if is_global:  # Ray's global-mode defaults: the head uses the driver host's CPUs and the driver's GPUs
        if num_cpus_head_node is None:
            num_cpus_head_node = os.cpu_count() or 1
        if num_gpus_head_node is None:
            num_gpus_head_node = len(spark_env.driver_gpu_addresses(sc))
    try:
        head_gpus = head_gpu_addresses(spark_env.driver_gpu_addresses(sc), num_gpus_head_node)
    except InsufficientResourcesError as e:
        raise ValueError(str(e)) from None
    task_cpus = spark_env.task_cpus(sc)
    task_gpus = int(spark_env.task_gpus(sc))
    cpus = num_cpus_worker_node if num_cpus_worker_node is not None else task_cpus
    gpus = num_gpus_worker_node if num_gpus_worker_node is not None else task_gpus
    use_profile = cpus != task_cpus or gpus != task_gpus
    if use_profile and kind == "local":
        raise ValueError(
            f"num_cpus_worker_node={cpus} / num_gpus_worker_node={gpus} differ from the task size of this local[N] "
            f"master (spark.task.cpus={task_cpus}); local mode has no stage-level scheduling, so use "
            f"num_cpus_worker_node={task_cpus} or set spark.task.cpus."
        )
    if use_profile and spark_env.dynamic_allocation(sc):
        raise ValueError(
            f"num_cpus_worker_node={cpus} needs a stage-level task resource profile, which Spark supports only with "
            "spark.dynamicAllocation.enabled=false; disable it or leave num_cpus_worker_node=None."
        )
    if gpus > 0 and spark_env.conf_get(sc, "spark.executor.resource.gpu.amount") is None and kind != "local":
        raise ValueError(
            f"num_gpus_worker_node={gpus} but the Spark executors have no GPUs "
            "(spark.executor.resource.gpu.amount is unset); use num_gpus_worker_node=0."
        )
    profile = spark_env.task_resource_profile(cpus, gpus) if use_profile else None
    # Right after getOrCreate() executors are still registering (one may be seconds behind
    # another): while the app is younger than Spark's own registration window, wait for the
    # slots to appear. In an older app a request that does not fit is refused at once.
    wait = 0.0 if kind == "local" else _registration_wait(sc)
    slots = spark_env.wait_for_slots(sc, max(1, max_worker_nodes), profile, wait)
    if max_worker_nodes == MAX_NUM_WORKER_NODES:
        if slots < 1:
            raise RayOnSparkError("max_worker_nodes=MAX_NUM_WORKER_NODES but the Spark application has no free task slots.")
        max_worker_nodes = slots
    elif slots == 0 and use_profile:
        executors = max(1, spark_env.executor_count(sc))
        cores = spark_env.max_concurrent_tasks(sc) * task_cpus // executors
        raise ValueError(
            f"num_cpus_worker_node={cpus} is more than an executor of this application can give one task "
            f"(about {cores} core(s) per executor); use num_cpus_worker_node<={max(cores, 1)} or bigger executors."
        )
    elif max_worker_nodes > slots:
        why = ("so the autoscaler could never reach the maximum" if min_worker_nodes is not None
               and min_worker_nodes < max_worker_nodes else "and the barrier job needs them all together")
        raise ValueError(
            f"max_worker_nodes={max_worker_nodes} but the Spark application can run only {slots} task(s) of "
            f"{cpus} CPU(s) at once, {why}; use max_worker_nodes<={slots}, "
            "a smaller num_cpus_worker_node, or more executors."
        )
    if min_worker_nodes is not None and min_worker_nodes > max_worker_nodes:  # max was MAX_NUM_WORKER_NODES
        raise ValueError(
            f"min_worker_nodes={min_worker_nodes} is more than the {max_worker_nodes} task slot(s) of this Spark "
            f"application; use min_worker_nodes<={max_worker_nodes}."
        )

    # ---- numbers
    dashboard_opts = {k: head_opts.pop(k) for k in ("include_dashboard", "dashboard_host", "dashboard_port") if k in head_opts}
    with_dashboard = dashboard_opts.get("include_dashboard", True) is not False
    head_mem = head_memory(num_cpus_head_node or 0, memory_head_node, object_store_memory_head_node)
    cluster_id = new_cluster_id()
    import ray._private.services as services

    head_host = services.resolve_ip_for_localhost(spark_env.driver_host(sc))
    ports = pick_head_ports(head_host, with_dashboard)
    if dashboard_opts.get("dashboard_port"):
        ports["dashboard_port"] = int(dashboard_opts["dashboard_port"])
    if kind == "local":
        footprint = spark_env.driver_memory(sc)  # the "executor" is the driver JVM itself
        reserved = head_mem.total_bytes
    else:
        footprint = spark_env.executor_footprint(sc)
        reserved = head_mem.total_bytes + spark_env.driver_memory(sc)
    token = None
    if gcs.token_auth_supported() and os.environ.get(gcs.AUTH_MODE_ENV, "").lower() != "disabled":
        token = gcs.new_token()
    temp_dir = make_temp_dir(temp_root, cluster_id)
    worker = WorkerPlan(
        cluster_id=cluster_id,
        head_host=head_host,
        head_port=ports["port"],
        auth_token=token,
        num_gpus=gpus,
        requested_heap=memory_worker_node,
        requested_object_store=object_store_memory_worker_node,
        executor_footprint=footprint,
        driver_host=head_host,
        driver_host_reserved=reserved,
        temp_root=temp_root,
        collect_log_dir=collect_log_to_path,
        worker_options=worker_opts,
        strict_mode=strict_mode,
        start_timeout=start_timeout,
    )
    head = HeadPlan(
        host=head_host,
        port=ports["port"],
        client_server_port=ports["client_server_port"],
        dashboard_port=ports["dashboard_port"],
        dashboard_host=str(dashboard_opts.get("dashboard_host", "127.0.0.1")),
        num_cpus=num_cpus_head_node or 0,
        num_gpus=len(head_gpus),
        gpu_addresses=head_gpus,
        memory=head_mem,
        options=head_opts,
    )
    plan = ClusterPlan(
        num_worker_nodes=max_worker_nodes,
        num_cpus_worker_node=cpus,
        num_gpus_worker_node=gpus,
        use_task_profile=use_profile,
        head=head,
        worker=worker,
        temp_dir=temp_dir,
        start_timeout=start_timeout,
        min_worker_nodes=min_worker_nodes,
        upscaling_speed=autoscale_upscaling_speed,
        idle_timeout_minutes=autoscale_idle_timeout_minutes,
    )
    return spark, plan


def _registration_wait(sc) -> float:
    """How long executors may still be registering: Spark's own waiting time since app start."""
    raw = spark_env.conf_get(sc, "spark.scheduler.maxRegisteredResourcesWaitingTime", "30s") or "30s"
    seconds = float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.rstrip("s"))
    elapsed = time.time() - sc.startTime / 1000.0
    return max(0.0, seconds - elapsed)


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
            if "ray_on_spark.dataset" in sys.modules:  # converted data goes with the cluster
                sys.modules["ray_on_spark.dataset"].release_holders()
            cluster.shutdown()
    finally:
        if owned is not None:  # a global cluster: other drivers must no longer find it
            lock, directory = owned
            global_cluster.unpublish(directory)
            lock.release()


def active_cluster() -> Optional[RayClusterOnSpark]:
    """The running cluster object (``.address``, ``.dashboard_url``, ``.shutdown()``), or None."""
    c = _ACTIVE
    return c if c is not None and c.state == "running" else None


@contextlib.contextmanager
def ray_cluster(**kwargs) -> Iterator[RayClusterOnSpark]:
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
