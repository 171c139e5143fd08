"""Ray on Spark, planned: ``setup_ray_cluster``'s arguments + facts of the Spark application -> a plan.

Pure functions, no Spark or Ray calls, no ports, tokens or temp dirs, so every rule is
unit-tested in milliseconds. The steps, in the order :mod:`ray_on_spark.on_spark.api`
runs them:

1. :func:`ray_on_spark.on_spark.arguments.check_arguments` -- the arguments alone (types, ranges, node options against
   ``ray start``'s option names, sizes against the host's memory) -> :class:`SetupArgs`;
2. :func:`worker_shape` -- with :class:`SparkFacts` (master, task size, confs): the CPUs
   and GPUs of a worker node and whether its tasks need a stage-level resource profile;
3. :func:`plan_cluster` -- with the task slots Spark offers for that shape: how many
   worker nodes, the head's share of the driver host -> :class:`ClusterPlan`.

Each error is a ``ValueError``/``TypeError`` naming the argument, the value, and a value
that would work. What the plan leaves open -- the cluster's id, ports, token and temp
dir -- is decided when the cluster starts (:mod:`ray_on_spark.on_spark.cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ray_on_spark.errors import InsufficientResourcesError, NotEnoughSparkSlotsError
from ray_on_spark.on_spark.arguments import MAX_NUM_WORKER_NODES, SetupArgs
from ray_on_spark.on_spark.resources import MemoryShare, head_gpu_addresses, head_memory

#: Ports the Databricks driver proxy forwards (Ray picks its dashboard port there too).
DATABRICKS_PROXY_PORTS = (9000, 10000)


@dataclass(frozen=True)
class SparkFacts:
    """What the plan needs to know of the Spark application (read by the api through ``spark_env``)."""

    master_kind: str  # spark_env.master_kind
    task_cpus: int
    task_gpus: int
    executor_gpus_configured: bool  # spark.executor.resource.gpu.amount is set
    dynamic_allocation: bool
    driver_gpu_addresses: Tuple[str, ...]
    driver_host: str  # the address the head listens on (what executors dial)
    driver_host_cpus: int
    executor_footprint: int  # host memory one executor takes
    driver_memory: int
    #: A Databricks runtime: its driver proxy reaches the dashboard on the driver's IP, ports 9000-9999.
    on_databricks: bool = False
    #: An executor's cores (spark.executor.cores, or its task slots x spark.task.cpus) and GPUs
    #: (spark.executor.resource.gpu.amount): a worker node's default size, as in Ray.
    executor_cores: Optional[int] = None
    executor_gpus: int = 0
    #: RAY_ON_SPARK_WORKER_CPU_CORES / _GPU_NUM (spark.executorEnv.*): a worker's size, as the user says.
    worker_cpus_override: Optional[int] = None
    worker_gpus_override: Optional[int] = None

    @property
    def stage_level_scheduling(self) -> bool:
        """Whether Spark can give a task a resource profile of its own (not in local mode, not with
        dynamic allocation): what lets a worker node be a whole executor."""
        return self.master_kind != "local" and not self.dynamic_allocation


@dataclass(frozen=True)
class WorkerShape:
    """A worker node's CPUs and GPUs, and whether its Spark tasks need a stage-level resource profile."""

    num_cpus: int
    num_gpus: int
    use_task_profile: bool


@dataclass(frozen=True)
class SlotFacts:
    """Task slots of the application for a worker node's shape (after executors registered)."""

    slots: int
    executors: int
    default_profile_slots: int  # slots of spark.task.cpus-sized tasks, to tell the user what an executor has


@dataclass(frozen=True)
class HeadPlan:
    """The head node on the driver: its share of the driver host and its options."""

    host: str
    num_cpus: int
    num_gpus: int
    memory: MemoryShare
    options: Dict[str, object] = field(default_factory=dict)
    #: The driver's GPU addresses the head may use (num_gpus_head_node of spark.driver.resource.gpu).
    gpu_addresses: Tuple[str, ...] = ()
    with_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Optional[int] = None  # the user's choice; None: any free port
    #: Where a free dashboard port is picked when the user picks none (None: anywhere the OS likes).
    dashboard_port_range: Optional[Tuple[int, int]] = None


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker node's Spark task needs, decided on the driver and shipped with the closure."""

    cluster_id: str
    head_host: str
    head_port: int
    auth_token: Optional[str]
    num_gpus: int
    requested_heap: Optional[int]
    requested_object_store: Optional[int]
    executor_footprint: int
    driver_host: str
    driver_host_reserved: int
    temp_root: Optional[str]
    collect_log_dir: Optional[str] = None  # collect_log_to_path: each node copies its logs there when it stops
    worker_options: Dict[str, object] = field(default_factory=dict)
    strict_mode: bool = False
    start_timeout: float = 120.0
    #: Added to every Ray node's environment (the start hook's custom_environment_variables()).
    node_env: Dict[str, str] = field(default_factory=dict)
    #: A node that dies is restarted in its task, at most this many times per window.
    max_restarts: int = 3
    restart_window_s: float = 120.0
    #: The head's ``ray start --temp-dir`` (set once the head is started): with it a worker node
    #: starts as soon as the head's GCS answers, not after the head node registered (join_head).
    head_temp_dir: Optional[str] = None

    @property
    def head_address(self) -> str:
        return f"{self.head_host}:{self.head_port}"


@dataclass(frozen=True)
class JobSlice:
    """Which worker nodes one barrier job runs: Spark partitions ``first`` .. ``first + size - 1``.

    The setup job runs them all. After a loss (an executor, a host) the cluster heals with jobs
    sized to the slots Spark has then, and tops up with more jobs when slots return; such a
    job's nodes must share their hosts with the nodes already running there. So a healing job
    carries what those nodes hold per host (``held_by_host``: host address -> heap + object
    store bytes, and object store bytes alone) and the cluster's node ``shape``: a healing node
    never gets more than the setup's nodes got, and never more than its host has left.
    """

    first: int
    size: int
    held_by_host: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    shape: Optional[Tuple[int, int]] = None  # (heap, object store) bytes of the setup's smallest node

    @property
    def healing(self) -> bool:
        return self.shape is not None

    def partitions(self) -> range:
        return range(self.first, self.first + self.size)

    def describe(self) -> str:
        return str(self.first) if self.size == 1 else f"{self.first}-{self.first + self.size - 1}"


@dataclass(frozen=True)
class ClusterPlan:
    """Every decision made before anything starts."""

    num_worker_nodes: int
    num_cpus_worker_node: int
    num_gpus_worker_node: int
    use_task_profile: bool
    head: HeadPlan
    requested_heap: Optional[int]
    requested_object_store: Optional[int]
    executor_footprint: int
    #: Memory already promised on the driver's host: the head, and the driver when executors share its host.
    driver_host_reserved: int
    temp_root: Optional[str] = None
    collect_log_dir: Optional[str] = None
    worker_options: Dict[str, object] = field(default_factory=dict)
    strict_mode: bool = False
    start_timeout: float = 120.0
    #: Autoscaling when set and below num_worker_nodes (then num_worker_nodes is the maximum).
    min_worker_nodes: Optional[int] = None
    upscaling_speed: float = 1.0
    idle_timeout_minutes: float = 1.0
    #: Added to every Ray node's environment, head and workers (the start hook's custom_environment_variables()).
    node_env: Dict[str, str] = field(default_factory=dict)
    #: When the barrier job is lost (an executor died, Spark ended the stage), it is submitted
    #: again as soon as Spark has the slots, at most this many times per window; then an error.
    max_job_resubmits: int = 5
    resubmit_window_s: float = 600.0

    @property
    def autoscaling(self) -> bool:
        return self.min_worker_nodes is not None and self.min_worker_nodes < self.num_worker_nodes

    @property
    def nodes_at_start(self) -> int:
        """Worker nodes setup waits for: all of them, or the minimum when autoscaling."""
        return self.min_worker_nodes if self.autoscaling else self.num_worker_nodes  # type: ignore[return-value]

    def worker_plan(self, cluster_id: str, head_port: int, auth_token: Optional[str]) -> WorkerPlan:
        """What the worker nodes' tasks get, once the cluster's id, head port and token exist."""
        return WorkerPlan(
            cluster_id=cluster_id,
            head_host=self.head.host,
            head_port=head_port,
            auth_token=auth_token,
            num_gpus=self.num_gpus_worker_node,
            requested_heap=self.requested_heap,
            requested_object_store=self.requested_object_store,
            executor_footprint=self.executor_footprint,
            driver_host=self.head.host,
            driver_host_reserved=self.driver_host_reserved,
            temp_root=self.temp_root,
            collect_log_dir=self.collect_log_dir,
            worker_options=dict(self.worker_options),
            strict_mode=self.strict_mode,
            start_timeout=self.start_timeout,
            node_env=dict(self.node_env),
        )


# ---------------------------------------------------------------- step 2: a worker node's shape
def worker_shape(args: SetupArgs, facts: SparkFacts) -> WorkerShape:
    """The CPUs and GPUs of every worker node, and whether Spark must be asked for them per task.

    Unset, a node is a whole executor, as in Ray (which gives it a whole Spark worker host):
    its cores and GPUs, through a stage-level task profile -- or what
    ``RAY_ON_SPARK_WORKER_CPU_CORES`` / ``_GPU_NUM`` say. Without stage-level scheduling
    (local mode, dynamic allocation) a node is one task (spark.task.cpus, its GPUs).
    """
    cpus, gpus = facts.task_cpus, facts.task_gpus
    if facts.stage_level_scheduling:
        cpus = next(v for v in (facts.worker_cpus_override, facts.executor_cores, cpus) if v is not None)
        gpus = next(v for v in (facts.worker_gpus_override, facts.executor_gpus if facts.executor_gpus_configured
                                else None, gpus) if v is not None)
    cpus = args.num_cpus_worker_node if args.num_cpus_worker_node is not None else cpus
    gpus = args.num_gpus_worker_node if args.num_gpus_worker_node is not None else gpus
    use_profile = cpus != facts.task_cpus or gpus != facts.task_gpus
    if use_profile and facts.master_kind == "local":
        raise ValueError(
            f"num_cpus_worker_node={cpus} / num_gpus_worker_node={gpus} differ from the task size of this local[N] "
            f"master (spark.task.cpus={facts.task_cpus}); local mode has no stage-level scheduling, so use "
            f"num_cpus_worker_node={facts.task_cpus} or set spark.task.cpus."
        )
    if use_profile and facts.dynamic_allocation:
        raise ValueError(
            f"num_cpus_worker_node={cpus} needs a stage-level task resource profile, which Spark supports only with "
            "spark.dynamicAllocation.enabled=false; disable it or leave num_cpus_worker_node=None."
        )
    if gpus > 0 and not facts.executor_gpus_configured and facts.master_kind != "local":
        raise ValueError(
            f"num_gpus_worker_node={gpus} but the Spark executors have no GPUs "
            "(spark.executor.resource.gpu.amount is unset); use num_gpus_worker_node=0."
        )
    return WorkerShape(cpus, gpus, use_profile)


def head_cpus_gpus(args: SetupArgs, facts: SparkFacts) -> Tuple[int, Tuple[str, ...], int]:
    """The head's CPUs, its GPU addresses among the driver's, and its GPU count.

    Global mode: the host's CPUs and all driver GPUs. When the driver has Spark GPU
    addresses, the head gets the first ``num_gpus_head_node`` of them (more is refused);
    when it has none (``local[N]``, no ``spark.driver.resource.gpu.*``), the head gets the
    count alone, as in Ray, with no addresses to pin (the api warns).
    """
    cpus, gpus = args.num_cpus_head_node, args.num_gpus_head_node
    if args.is_global:  # Ray's global-mode defaults
        cpus = facts.driver_host_cpus if cpus is None else cpus
        gpus = len(facts.driver_gpu_addresses) if gpus is None else gpus
    if gpus and not facts.driver_gpu_addresses:
        return cpus or 0, (), gpus
    try:
        addresses = head_gpu_addresses(facts.driver_gpu_addresses, gpus)
    except InsufficientResourcesError as e:
        raise ValueError(str(e)) from None
    return cpus or 0, addresses, len(addresses)


# ---------------------------------------------------------------- step 3: the plan
def plan_cluster(args: SetupArgs, facts: SparkFacts, shape: WorkerShape, slots: SlotFacts) -> ClusterPlan:
    """Every number of the cluster, given the task slots Spark offers for ``shape``."""
    max_nodes = args.max_worker_nodes
    if max_nodes == MAX_NUM_WORKER_NODES:
        if slots.slots < 1:
            raise NotEnoughSparkSlotsError(
                "max_worker_nodes=MAX_NUM_WORKER_NODES but the Spark application has no free task slots.")
        max_nodes = slots.slots
    elif slots.slots == 0 and shape.use_task_profile:
        cores = slots.default_profile_slots * facts.task_cpus // max(1, slots.executors)
        raise ValueError(
            f"num_cpus_worker_node={shape.num_cpus} is more than an executor of this application can give one task "
            f"(about {cores} core(s) per executor); use num_cpus_worker_node<={max(cores, 1)} or bigger executors."
        )
    elif max_nodes > slots.slots:
        why = ("so the autoscaler could never reach the maximum" if args.min_worker_nodes is not None
               and args.min_worker_nodes < max_nodes else "and the barrier job needs them all together")
        raise ValueError(
            f"max_worker_nodes={max_nodes} but the Spark application can run only {slots.slots} task(s) of "
            f"{shape.num_cpus} CPU(s) at once, {why}; use max_worker_nodes<={slots.slots}, "
            "a smaller num_cpus_worker_node, or more executors."
        )
    if args.min_worker_nodes is not None and args.min_worker_nodes > max_nodes:  # max was MAX_NUM_WORKER_NODES
        raise ValueError(
            f"min_worker_nodes={args.min_worker_nodes} is more than the {max_nodes} task slot(s) of this Spark "
            f"application; use min_worker_nodes<={max_nodes}."
        )

    head_opts = dict(args.head_options)
    dashboard = {k: head_opts.pop(k) for k in ("include_dashboard", "dashboard_host", "dashboard_port") if k in head_opts}
    head_cpus, head_gpus, head_gpu_count = head_cpus_gpus(args, facts)
    head_mem = head_memory(head_cpus, args.memory_head_node, args.object_store_memory_head_node)
    if facts.master_kind == "local":  # the "executor" is the driver JVM itself
        footprint, reserved = facts.driver_memory, head_mem.total_bytes
    else:
        footprint, reserved = facts.executor_footprint, head_mem.total_bytes + facts.driver_memory
    head = HeadPlan(
        host=facts.driver_host,
        num_cpus=head_cpus,
        num_gpus=head_gpu_count,
        gpu_addresses=head_gpus,
        memory=head_mem,
        options=head_opts,
        with_dashboard=dashboard.get("include_dashboard", True) is not False,
        # Only the driver's own user can reach 127.0.0.1; Databricks' driver proxy connects to the
        # driver's IP, so there the dashboard listens on that one address (never 0.0.0.0, as Ray does).
        dashboard_host=str(dashboard.get("dashboard_host", facts.driver_host if facts.on_databricks else "127.0.0.1")),
        dashboard_port=int(dashboard["dashboard_port"]) if dashboard.get("dashboard_port") else None,  # type: ignore[call-overload]
        dashboard_port_range=DATABRICKS_PROXY_PORTS if facts.on_databricks else None,
    )
    return ClusterPlan(
        num_worker_nodes=max_nodes,
        num_cpus_worker_node=shape.num_cpus,
        num_gpus_worker_node=shape.num_gpus,
        use_task_profile=shape.use_task_profile,
        head=head,
        requested_heap=args.memory_worker_node,
        requested_object_store=args.object_store_memory_worker_node,
        executor_footprint=footprint,
        driver_host_reserved=reserved,
        temp_root=args.ray_temp_root_dir,
        collect_log_dir=args.collect_log_to_path,
        worker_options=dict(args.worker_options),
        strict_mode=args.strict_mode,
        start_timeout=args.start_timeout,
        min_worker_nodes=args.min_worker_nodes,
        upscaling_speed=args.upscaling_speed,
        idle_timeout_minutes=args.idle_timeout_minutes,
    )


def registration_wait(window_s: float, app_age_s: float) -> float:
    """How long executors may still be registering: Spark's own waiting window less the app's age."""
    return max(0.0, window_s - app_age_s)

