"""RayClusterOnSpark: the one object that owns a Ray-on-Spark cluster's processes.

It starts the head (through a supervisor) on the driver and, at the same moment, the
barrier Spark job whose tasks start the worker nodes; worker nodes retry their GCS
connection until the head answers, so the two start in parallel instead of one after
the other.  ``shutdown()`` cancels the job group, stops the head, and waits until every
process it knows about is gone.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from ray_on_spark import _ray, spark_env
from ray_on_spark.data import ray_entry_points
from ray_on_spark.errors import HeadStartError, RayOnSparkError, WorkerNodesStartError
from ray_on_spark.on_spark import diagnostics, hooks, nodes, ray_start
from ray_on_spark.on_spark.autoscaling.launcher import NodeLauncher
from ray_on_spark.on_spark.autoscaling.start import start_autoscaling
from ray_on_spark.on_spark.plan import ClusterPlan, JobSlice, WorkerPlan
from ray_on_spark.on_spark.progress import StartProgress
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_PARTITION, NODE_ID_RESOURCE
from ray_on_spark.on_spark.resources import MemoryShare
from ray_on_spark.on_spark.worker_task import collect_logs_path, run_worker_node
from ray_on_spark.runtime import procs
from ray_on_spark.runtime.ports import free_port_in_range, free_ports, port_open, port_state
from ray_on_spark.runtime.private import private_temp_dir, short_alias
from ray_on_spark.runtime.restarts import RestartPolicy
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.runtime.waiting import poll_until, wait_until

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

_ENV_KEYS = ("RAY_ADDRESS", _ray.AUTH_MODE_ENV, _ray.AUTH_TOKEN_ENV, _ray.AUTH_TOKEN_PATH_ENV)


class _Named(str, enum.Enum):
    """A ``str`` enum that prints as its value, so ``cluster.state == "running"`` reads as it always did."""

    def __str__(self) -> str:
        return self.value


class ClusterState(_Named):
    """A cluster's life: new -> starting -> running -> stopping -> stopped (a failed start goes to stopped too)."""

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Health(_Named):
    """A running cluster's worker nodes: all there (ready), some missing (degraded), the lost barrier
    job submitted again and its nodes not all back yet (healing), or given up on (failed)."""

    READY = "ready"
    DEGRADED = "degraded"
    HEALING = "healing"
    FAILED = "failed"


@dataclass(frozen=True)
class Endpoints:
    """What a cluster decides when it starts: its id, the head's ports, its token and private temp dir."""

    cluster_id: str
    port: int
    client_server_port: int
    dashboard_port: Optional[int]
    auth_token: Optional[str]
    temp_dir: str


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:8]


def mint_endpoints(plan: ClusterPlan) -> Endpoints:
    """Pick the head's ports (free a moment ago), a token and a private (0700) temp dir; removed at shutdown."""
    cluster_id = new_cluster_id()
    port, client_port, dashboard_port = free_ports(3)
    if plan.head.dashboard_port is not None:
        dashboard_port = plan.head.dashboard_port
    elif plan.head.dashboard_port_range is not None:
        dashboard_port = free_port_in_range(*plan.head.dashboard_port_range, exclude=(port, client_port))
    token = None
    if _ray.token_auth_supported() and os.environ.get(_ray.AUTH_MODE_ENV, "").lower() != "disabled":
        token = _ray.new_token()
    return Endpoints(
        cluster_id=cluster_id,
        port=port,
        client_server_port=client_port,
        dashboard_port=dashboard_port if plan.head.with_dashboard else None,
        auth_token=token,
        temp_dir=private_temp_dir(f"ros-{cluster_id}-", plan.temp_root),
    )


#: A lost job whose slots do not all come back within this long is replaced by a smaller one
#: (a lost executor is relaunched by Spark's worker within seconds; a lost host never is).
PARTIAL_HEAL_AFTER_S = 15.0


@dataclass(eq=False)
class _BarrierJob:
    """One barrier Spark job of worker nodes and what became of it."""

    slice: JobSlice
    submitted_ms: int
    thread: Optional[threading.Thread] = None
    results: Optional[List[str]] = None
    error: Optional[BaseException] = None
    up: bool = False  # every node of it registered

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def nodes_up(self, views: List[_ray.NodeView], cluster_id: str) -> bool:
        """Whether all of its nodes registered: its partition labels are its own (a healing job's are
        new), so no start time is compared -- the workers' clocks need not agree with the driver's."""
        mine = {v.labels.get(LABEL_PARTITION) for v in nodes.ours(views, cluster_id)}
        return all(str(p) in mine for p in self.slice.partitions())


class RayClusterOnSpark:
    """Owns one Ray cluster on Spark: the head's process tree and the barrier job.

    Use as a context manager or call :meth:`shutdown`; shutdown is idempotent and also
    runs at interpreter exit. ``address``, ``client_address`` and ``dashboard_url`` are
    set when :meth:`start` has picked the head's ports.
    """

    def __init__(self, spark: "SparkSession", plan: ClusterPlan, hook: Any = None):
        self.spark = spark
        self.plan = plan
        #: The start hook (:mod:`ray_on_spark.on_spark.hooks`), called at Ray's moments.
        self.hook = hook if hook is not None else hooks.RayOnSparkStartHook()
        self.progress = StartProgress(plan.nodes_at_start)
        self.cluster_id: Optional[str] = None
        self.address: Optional[str] = None
        self.client_address: Optional[str] = None
        self.dashboard_url: Optional[str] = None
        self.job_group: Optional[str] = None
        self.temp_dir: Optional[str] = None
        self.head_log: Optional[str] = None
        self.auth_token: Optional[str] = None
        #: What the worker nodes' tasks get (decided at start).
        self.worker: Optional[WorkerPlan] = None
        self._endpoints: Optional[Endpoints] = None
        self.setup_seconds: Optional[float] = None
        self._lock = threading.RLock()
        self._state = ClusterState.NEW
        self._head: Optional[SupervisedProcess] = None
        self._head_records: List[procs.ProcessRecord] = []
        self._worker_records: List[procs.ProcessRecord] = []
        #: The barrier jobs that run the worker nodes: the setup's one, then healing ones.
        self._jobs: List[_BarrierJob] = []
        self._next_partition = 0
        #: The setup's smallest node (heap, object store): healing nodes get no more.
        self._node_shape: Optional[Tuple[int, int]] = None
        self._saved_env: Dict[str, Optional[str]] = {}
        self._entry_points = False  # whether start() routed Ray's from_spark / to_spark through ours
        self._client = None
        self._stop_monitor = threading.Event()
        self._stopped = threading.Event()
        self._monitor_thread: Optional[threading.Thread] = None
        self._dead_nodes: Dict[str, _ray.NodeView] = {}
        #: Healing: when jobs were lost and resubmitted, and whether the cluster gave up.
        self._resubmits: List[float] = []
        self._losses: List[float] = []
        self._short_since: Optional[float] = None  # since when Spark has had too few slots for every node
        self._heal_failure: Optional[str] = None
        self._waiting_for_slots_logged = False
        self._launcher: Optional[NodeLauncher] = None
        self._autoscaling_config: Optional[str] = None
        #: The one shape of every autoscaled worker node (decided before the head starts).
        self.worker_share: Optional[MemoryShare] = None

    def _take(self, ends: Endpoints) -> None:
        h = self.plan.head
        self.cluster_id = ends.cluster_id
        self.address = f"{h.host}:{ends.port}"
        self.client_address = f"ray://{h.host}:{ends.client_server_port}"
        self.dashboard_url = f"http://{h.dashboard_host}:{ends.dashboard_port}" if ends.dashboard_port else None
        self.job_group = f"ray_on_spark-{ends.cluster_id}"
        self.temp_dir = ends.temp_dir
        self.head_log = os.path.join(ends.temp_dir, "head.log")
        self.auth_token = ends.auth_token
        self.worker = self.plan.worker_plan(ends.cluster_id, ends.port, ends.auth_token)
        self._endpoints = ends

    @property
    def launcher_url(self) -> Optional[str]:
        """Where autoscaling's node launcher listens (loopback only), or None without autoscaling."""
        return self._launcher.url if self._launcher is not None else None

    def spark_ui_label(self) -> str:
        """What the Spark UI shows for the cluster's jobs: a long-running job says what it is and how to reach it."""
        return (f"Ray cluster {self.cluster_id} (ray_on_spark): head {self.address}, "
                f"dashboard {self.dashboard_url or 'off'}")

    # ----------------------------------------------------------------- start
    def start(self) -> "RayClusterOnSpark":
        """Start the head and the worker nodes; return once ``nodes_at_start`` worker nodes registered.

        Raises :class:`HeadStartError` when the head does not come up (setup retries that
        once, with new ports), :class:`WorkerNodesStartError` when the worker nodes' job
        fails; on any failure everything started so far is stopped again.
        """
        t0 = time.monotonic()
        with self._lock:
            if self._state != ClusterState.NEW:
                raise RayOnSparkError(f"cluster {self.cluster_id} was already started")
            self._state = ClusterState.STARTING
        try:
            self._take(mint_endpoints(self.plan))
            self.progress.cluster_id = self.cluster_id
            if self.plan.autoscaling:
                self._start_launcher()
            self._start_head()
            self._hold_slots()
            if not self.plan.autoscaling:
                self._start_job()
            # ray.data.from_spark / Dataset.to_spark through ours (without RayDP); cheap: ray.data
            # is patched when it is imported, not imported here.
            self._entry_points = ray_entry_points.install()
            self._wait_ready()
            self._dashboard_created()
            self._export_env()
            assert self._head is not None
            self._head_records = procs.tree(self._head.pid)
            with self._lock:
                self._state = ClusterState.RUNNING
            hooks.call(self.hook, "on_cluster_created", self)
        except BaseException:
            self.shutdown()
            raise
        self._monitor_thread = threading.Thread(target=self._monitor, name=f"ray_on_spark-monitor-{self.cluster_id}", daemon=True)
        self._monitor_thread.start()
        self.setup_seconds = time.monotonic() - t0
        self.progress.ready(self.address, self.dashboard_url, self.plan.num_worker_nodes if self.plan.autoscaling else None)
        return self

    def _dashboard_created(self) -> None:
        """Once the dashboard answers (a deadline, then a warning), tell the start hook its port.

        Setup waits for the dashboard only for a hook that uses the moment (Databricks' shows the
        link): nobody else needs it up before setup returns.
        """
        ends = self._endpoints
        if ends is None or ends.dashboard_port is None or not hooks.overrides(self.hook, "on_ray_dashboard_created"):
            return
        host = self.plan.head.dashboard_host
        probe_host = self.plan.head.host if host in ("0.0.0.0", "") else host
        try:
            wait_until(lambda: port_open(probe_host, ends.dashboard_port), timeout=min(30.0, self.plan.start_timeout),
                       what=f"the Ray dashboard on {probe_host}:{ends.dashboard_port}", check=self._check_failed)
        except TimeoutError:
            logger.warning("the Ray dashboard did not answer on %s; is ray[default] installed?", self.dashboard_url)
            return
        hooks.call(self.hook, "on_ray_dashboard_created", ends.dashboard_port)

    def _start_launcher(self) -> None:
        """Autoscaling: size the nodes, start the driver's node launcher, write Ray's autoscaler config."""
        assert self.worker is not None and self.temp_dir is not None and self.cluster_id is not None
        started = start_autoscaling(self.spark, self.plan, self.worker, self.cluster_id, self.temp_dir,
                                    self.spark_ui_label(),
                                    on_job_group=lambda group: hooks.call(self.hook, "on_spark_job_created", group))
        self._launcher, self._autoscaling_config, self.worker_share = started

    def _start_head(self) -> None:
        assert self.temp_dir is not None and self.head_log is not None and self._endpoints is not None
        h, ends = self.plan.head, self._endpoints
        gpus = list(h.gpu_addresses) if h.gpu_addresses or not h.num_gpus else None  # None: a bare count
        env = ray_start.node_env(auth_token=self.auth_token, gpus=gpus, temp_dir=self.temp_dir,
                                 extra=self.plan.node_env)
        # The GCS declares a silent node dead after period x threshold (Ray's default 3 s x 5);
        # a lost executor should leave the cluster within a few seconds instead.
        env.setdefault("RAY_health_check_period_ms", "1000")
        env.setdefault("RAY_health_check_timeout_ms", "1000")
        env.setdefault("RAY_health_check_failure_threshold", "4")
        options: Dict[str, object] = dict(h.options)
        if self._autoscaling_config:
            env["RAY_enable_autoscaler_v2"] = "0"  # v1's StandardAutoscaler drives our node provider
            env.setdefault("AUTOSCALER_UPDATE_INTERVAL_S", "1")
            # the monitor imports our provider: make this very package importable there
            pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
            options = ray_start.merged_resources_option(options, {NODE_ID_RESOURCE: 0})  # the head is provider node 0
        ray_temp = os.path.join(self.temp_dir, "head")
        alias = short_alias(ray_temp)  # under a long ray_temp_root_dir Ray's sockets need a short path
        ray_temp = alias or ray_temp
        assert self.worker is not None
        self.worker = replace(self.worker, head_temp_dir=ray_temp)  # worker nodes join once the GCS answers
        head = ray_start.head_command(
            host=h.host, port=ends.port, client_server_port=ends.client_server_port,
            dashboard=(h.dashboard_host, ends.dashboard_port) if ends.dashboard_port is not None else None,
            shape=ray_start.NodeShape(h.num_cpus, h.num_gpus, h.memory.heap_bytes, h.memory.object_store_bytes),
            temp_dir=ray_temp,
            labels={LABEL_CLUSTER: ends.cluster_id}, options=options, autoscaling_config=self._autoscaling_config,
        )
        # If the driver dies without shutdown(), the supervisor removes the temp dir.
        cmd = supervisor_command(
            head, log=self.head_log, cleanup_dir=self.temp_dir, start_timeout=self.plan.start_timeout,
            collect_logs_to=collect_logs_path(self.plan.collect_log_dir, f"ray-head-{ends.cluster_id}"),
            cleanup_links=[alias] if alias else [],
        )
        logger.debug("starting Ray head: %s", " ".join(cmd))
        self._head = SupervisedProcess(cmd, env, what="Ray head node")
        self._head_records = [r for r in [self._head.record] if r]

    def _hold_slots(self) -> None:
        """Tell conversions which Spark slots this cluster's nodes hold for as long as it runs
        (:func:`spark_env.require_free_slot` refuses a conversion that could never start)."""
        plan, cpus = self.plan, self.plan.num_cpus_worker_node

        def cores() -> int:
            nodes = len(self._launcher.groups()) if self._launcher is not None else self._live_size()
            return nodes * cpus

        fewer = max(0, plan.num_worker_nodes - 1)
        fix = (f"setup_ray_cluster(max_worker_nodes={fewer}, ...) (one node fewer)" if fewer
               else f"setup_ray_cluster(num_cpus_worker_node={max(1, cpus - 1)}, ...) (a smaller node)")
        spark_env.hold_slots(str(self.cluster_id), spark_env.HeldSlots(
            what=f"Ray cluster {self.cluster_id}'s worker nodes of {cpus} CPU(s) each", cores=cores, fix=fix))

    def _start_job(self, size: Optional[int] = None, heal: bool = False) -> "_BarrierJob":
        """Submit a barrier job of ``size`` worker nodes (all of them by default), labelled with the
        next free Spark partitions; a healing job carries what running nodes hold (JobSlice)."""
        sc = self.spark.sparkContext
        plan = self.plan
        worker_plan = self.worker
        n = plan.num_worker_nodes if size is None else size
        held: Dict[str, Tuple[int, int]] = {}
        if heal and self._client is not None:
            # Only the running jobs' nodes: a lost job's nodes stay listed alive for a few seconds,
            # until the GCS's health checks give up on them, yet their memory is free already.
            running = {str(p) for j in self._jobs if j.alive for p in j.slice.partitions()}
            views = nodes.ours(_ray.list_nodes(self._client, timeout=2.0), self.cluster_id)
            for v in nodes.newest_per_partition([v for v in views if v.labels.get(LABEL_PARTITION) in running]):
                total, store = held.get(v.address, (0, 0))
                node_store = int(v.resources.get("object_store_memory", 0))
                held[v.address] = (total + int(v.resources.get("memory", 0)) + node_store, store + node_store)
        job_slice = JobSlice(first=self._next_partition, size=n, held_by_host=held,
                             shape=self._node_shape if heal else None)
        self._next_partition += n
        job = _BarrierJob(job_slice, submitted_ms=int(time.time() * 1000))

        def task(rows: Iterator) -> Iterator[str]:
            return run_worker_node(worker_plan, rows, job_slice)

        def run() -> None:
            try:
                sc.setJobGroup(self.job_group, f"{self.spark_ui_label()}: {n} worker node(s), one per task", True)
                rdd = sc.parallelize(range(n), n).barrier().mapPartitions(task)
                if plan.use_task_profile:
                    rdd = rdd.withResources(
                        spark_env.task_resource_profile(plan.num_cpus_worker_node, plan.num_gpus_worker_node)
                    )
                job.results = rdd.collect()
            except BaseException as e:  # reported by _check_failed / the monitor
                job.error = e

        job.thread = spark_env.spark_thread(run, f"ray_on_spark-{self.cluster_id}-{job_slice.first}")
        self._jobs.append(job)
        job.thread.start()
        self.progress.step("barrier Spark job of %d task(s) submitted (job group %s)", n, self.job_group)
        if not heal:
            hooks.call(self.hook, "on_spark_job_created", self.job_group)
        return job

    def _live_size(self) -> int:
        """How many worker nodes the running barrier jobs hold slots for."""
        return sum(j.slice.size for j in self._jobs if j.alive)

    def _check_failed(self) -> None:
        """Raise at once when the head or the job has already failed (no waiting for a deadline)."""
        if self._head is not None and self._head.proc.poll() is not None:
            raise HeadStartError(f"The Ray head node failed to start on the driver:\n{self._read_head_output()}")
        if self._jobs and not self._jobs[0].alive:
            raise WorkerNodesStartError(self._job_failure_text(self._jobs[0]))

    def _job_failure_text(self, job: "_BarrierJob") -> str:
        if job.error is not None:
            return diagnostics.spark_job_failure(str(job.error))
        return diagnostics.worker_start_failure(job.results or [], self.temp_dir)

    def _read_head_output(self) -> str:
        out = self._head.rest(timeout=2.0) if self._head is not None else ""
        return out.strip() or f"(see {self.head_log})"

    def _wait_ready(self) -> None:
        n = self.plan.nodes_at_start
        with _ray.auth_context(self.auth_token):
            self._client = wait_until(
                lambda: self._probe_client(),
                timeout=self.plan.start_timeout,
                what="the Ray head's GCS to answer",
                check=self._check_failed,
            )
            self.progress.step("head's GCS answers")

            def joined() -> Optional[List[_ray.NodeView]]:
                every = _ray.list_nodes(self._client, timeout=1.0)
                views = nodes.ours(every, str(self.cluster_id))
                head = nodes.head_alive(every, str(self.cluster_id))
                self.progress.head_up(head, self.address)
                self.progress.nodes_joined(len(views))
                return views if head and len(views) >= n else None

            registered = wait_until(
                joined,
                timeout=self.plan.start_timeout,
                what=f"the Ray head node and {n} Ray worker node(s) to register",
                check=self._check_failed,
            )
        self._record_worker_supervisors(registered)
        shapes = [(int(v.resources.get("memory", 0)), int(v.resources.get("object_store_memory", 0)))
                  for v in registered]
        if shapes:
            self._node_shape = (min(h for h, _ in shapes), min(o for _, o in shapes))

    def _probe_client(self) -> Any:
        client = _ray.gcs_client(self.address)
        _ray.list_nodes(client, timeout=1.0)
        return client

    def _our_nodes(self) -> List[_ray.NodeView]:
        return nodes.ours(_ray.list_nodes(self._client, timeout=1.0), self.cluster_id)

    def _record_worker_supervisors(self, views: List[_ray.NodeView]) -> None:
        """Remember the supervisors of worker nodes on this host, to verify they are gone later."""
        for record in nodes.local_supervisors(views, self.plan.head.host):
            if record not in self._worker_records:
                self._worker_records.append(record)

    def _monitor(self, interval: float = 0.5) -> None:
        """Watch the cluster while it runs: say which worker node died and why, and when the job ends.

        The tasks restart dead nodes themselves; this thread only makes it visible on
        the driver (a warning naming the node, its Spark partition and Ray's reason).
        """
        client = None
        while not self._stop_monitor.wait(interval):
            if self._state != ClusterState.RUNNING:
                continue
            try:
                client = client or _ray.gcs_client(self.address)
                views = _ray.list_nodes(client, timeout=1.0)
            except Exception as e:  # the head may be busy; try again next round
                logger.debug("monitor: GCS probe failed: %s", e)
                continue
            for v in nodes.newly_dead(views, self.cluster_id, self._dead_nodes):
                self._dead_nodes[v.node_id] = v
                self._report_dead(v)
            if self.plan.autoscaling:
                continue  # nodes come and go with their one-task jobs; the autoscaler watches them
            try:
                self._heal(views)
            except Exception as e:  # a py4j or GCS hiccup must not end the watch (no more healing)
                logger.warning("Ray cluster %s: healing step failed, trying again: %s", self.cluster_id, e)

    def _report_dead(self, v: _ray.NodeView) -> None:
        """Say which node went and whether it died or is cut off: the GCS cannot tell (both are failed
        health checks), its host can -- a host that is up refuses the dead raylet's port at once."""
        where = f"Ray worker node {v.node_id[:12]} (Spark partition {v.labels.get(LABEL_PARTITION)}, {v.address})"
        reason = v.death_reason or "no reason given"
        if v.port and port_state(v.address, v.port, timeout=1.0) == "silent":
            logger.warning(
                "%s is unreachable: the network to its host, or the host itself, is down (%s). Work goes on on the "
                "other nodes. When the link returns, its Spark task starts the node again; if the host is lost, the "
                "cluster heals through Spark. Degraded until then.", where, reason)
        else:
            logger.warning("%s died: %s. Its Spark task restarts it; the cluster is degraded until then.", where, reason)

    def _heal(self, views: List[_ray.NodeView]) -> None:
        """Keep the cluster at its nodes: report lost barrier jobs, and submit jobs for the missing nodes.

        A lost job (an executor or a host gone: Spark ends the whole barrier stage) is replaced
        by a job sized to the slots Spark has: all of them once they are back (a lost executor is
        relaunched within seconds), or after :data:`PARTIAL_HEAL_AFTER_S` as many as fit now (a
        lost host), topped up by more jobs when slots return. At most ``max_job_resubmits``
        losses within ``resubmit_window_s``, then the cluster is ``failed`` with an error saying so.
        """
        now = time.monotonic()
        policy = RestartPolicy(self.plan.max_job_resubmits, self.plan.resubmit_window_s)
        lost = [j for j in self._jobs if not j.alive]
        for job in lost:
            self._jobs.remove(job)
            logger.error("The Ray cluster %s lost its Spark job (worker nodes %s): %s", self.cluster_id,
                         job.slice.describe(), self._job_failure_text(job))
        if lost:  # one incident, however many jobs it ended (a lost host may end several)
            if self._heal_failure is None and not policy.allows(policy.recent(self._losses, now), now):
                self._heal_failure = (f"its Spark jobs were lost {len(policy.recent(self._losses, now)) + 1} times "
                                      f"within {self.plan.resubmit_window_s:.0f}s")
                logger.error("Ray cluster %s gives up healing: %s; not resubmitting them again. Call "
                             "shutdown_ray_cluster() and set up a new cluster.", self.cluster_id, self._heal_failure)
            self._losses = policy.recent(self._losses, now) + [now]
        for job in self._jobs:
            if job.alive and not job.up and job.nodes_up(views, self.cluster_id):
                job.up = True
                if job.slice.healing:
                    logger.info("Ray cluster %s healed %d worker node(s) (%d of %d running)", self.cluster_id,
                                job.slice.size, self._live_size(), self.plan.num_worker_nodes)
        missing = self.plan.num_worker_nodes - self._live_size()
        if missing <= 0 or self._heal_failure is not None:
            self._short_since = None
            return
        if any(j.alive and not j.up for j in self._jobs):
            return  # a job still starting: what its nodes will hold is not known yet
        if self._head is not None and self._head.proc.poll() is not None:
            self._heal_failure = "the Ray head node is gone"
            logger.error("Ray cluster %s cannot heal: its head node exited; call shutdown_ray_cluster()",
                         self.cluster_id)
            return
        sc = self.spark.sparkContext
        profile = (spark_env.task_resource_profile(self.plan.num_cpus_worker_node, self.plan.num_gpus_worker_node)
                   if self.plan.use_task_profile else None)
        free = spark_env.max_concurrent_tasks(sc, profile) - self._live_size()
        if free < missing:
            self._short_since = self._short_since or now
            if free <= 0 or now - self._short_since < PARTIAL_HEAL_AFTER_S:
                if not self._waiting_for_slots_logged:
                    self._waiting_for_slots_logged = True
                    logger.warning("Ray cluster %s is degraded: %d worker node(s) missing; Spark has slots for %d now. "
                                   "Resubmitting when it has them all, or in %.0fs as many as fit then",
                                   self.cluster_id, missing, max(free, 0), PARTIAL_HEAL_AFTER_S)
                return
        size = min(missing, free)
        with self._lock:  # not while shutdown() collects the jobs to cancel
            if self._state != ClusterState.RUNNING:
                return
            self._resubmits.append(now)
            self._waiting_for_slots_logged = False
            self._short_since = None
            logger.warning("Ray cluster %s is healing: submitting a Spark job for %d of its %d missing worker node(s)",
                           self.cluster_id, size, missing)
            self._start_job(size, heal=True)

    def status(self) -> Dict[str, object]:
        """``{"state", "health", "expected_worker_nodes", "alive_worker_nodes", "degraded", "resubmits",
        "dead_worker_nodes"}``; ``health`` (a running cluster): ready, degraded, healing or failed; each
        dead node with its id, Spark partition, host address and Ray's reason."""
        running = self._state == ClusterState.RUNNING
        alive = len(self.worker_nodes()) if running else 0
        return {
            "state": self._state.value,
            "health": self._health(alive).value if running else None,
            "expected_worker_nodes": self.plan.nodes_at_start,
            "alive_worker_nodes": alive,
            "degraded": running and alive < self.plan.nodes_at_start,
            "resubmits": len(self._resubmits),
            "running_jobs": len([j for j in self._jobs if j.alive]),
            "dead_worker_nodes": [
                {"node_id": v.node_id, "partition": v.labels.get(LABEL_PARTITION), "host": v.address,
                 "reason": v.death_reason}
                for v in list(self._dead_nodes.values())
            ],
        }

    def _health(self, alive: int) -> Health:
        if self._heal_failure is not None:
            return Health.FAILED
        if any(j.alive and not j.up and j.slice.healing for j in self._jobs):
            return Health.HEALING
        short = not self.plan.autoscaling and self._live_size() < self.plan.num_worker_nodes
        return Health.READY if alive >= self.plan.nodes_at_start and not short else Health.DEGRADED

    # ----------------------------------------------------------------- env
    def _export_env(self) -> None:
        """While the cluster runs, ``ray.init()`` with no address connects to it, with its token."""
        assert self.address is not None
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ["RAY_ADDRESS"] = self.address
        _ray.use_auth(self.auth_token)
        _ray.register_client_address(self.address, self.client_address)  # for tasks on hosts without a node

    def _restore_env(self) -> None:
        if self.address is not None:
            _ray.register_client_address(self.address, None)
        _ray.apply_env(os.environ, self._saved_env)
        self._saved_env = {}
        _ray.refresh_auth_config()

    # ----------------------------------------------------------------- info
    def worker_nodes(self) -> List[_ray.NodeView]:
        """Alive worker nodes of this cluster, one per Spark partition, as the GCS reports them.

        After a node is restarted in its task, the GCS lists the dead one as alive until
        its health checks fail; the newest node of each partition is the real one.
        """
        with _ray.auth_context(self.auth_token):
            return nodes.newest_per_partition(self._our_nodes())

    @property
    def state(self) -> ClusterState:
        return self._state

    @property
    def is_shutdown(self) -> bool:
        """True once shutdown began (Ray's cluster handler has this flag; start hooks' watchers read it)."""
        return self._state in (ClusterState.STOPPING, ClusterState.STOPPED)

    @property
    def spark_job_group_id(self) -> Optional[str]:
        """The barrier job's Spark job group (Ray's handler's name for it)."""
        return self.job_group

    def wait_shutdown(self, timeout: float) -> bool:
        """Block until the cluster is shut down or ``timeout`` passes; True when it is shut down."""
        return self._stopped.wait(timeout)

    def __repr__(self) -> str:
        return f"RayClusterOnSpark(id={self.cluster_id!r}, address={self.address!r}, state={self._state!r})"

    # ----------------------------------------------------------------- shutdown
    def shutdown(self, timeout: float = 30.0, graceful: float = 5.0) -> None:
        """Stop the head, let the worker tasks end, wait until all our processes are gone.

        Order matters for speed: the head goes first; every worker supervisor watches
        the head's GCS port and stops its node within about a second, so the barrier
        tasks *return* and the job ends by itself.  Only a job still running after
        ``graceful`` seconds is cancelled (Spark then needs its kill timeout to end the
        Python workers).  Idempotent.  Processes are recorded by pid and create time;
        workers on other hosts are known gone when the job has no running task.
        """
        with self._lock:
            if self._state in (ClusterState.STOPPED, ClusterState.STOPPING):
                return
            self._state = ClusterState.STOPPING
        t0 = time.monotonic()
        deadline = t0 + timeout
        self._stop_monitor.set()
        if self._monitor_thread is not None:
            self._monitor_thread.join(2.0)
        if self._client is not None:  # nodes restarted since setup have new supervisors: record them too
            try:
                self._record_worker_supervisors(self.worker_nodes())
            except Exception as e:
                logger.debug("could not list worker nodes before shutdown: %s", e)
        self._disconnect_driver()
        if self._head is not None:
            self._head_records = _merge(self._head_records, procs.tree(self._head.pid))
            if self._head.proc.poll() is None:
                self._head.proc.terminate()  # the supervisor stops the whole head tree
        sc = self.spark.sparkContext
        threads = [j.thread for j in self._jobs if j.thread is not None]
        groups = [self.job_group] if threads and self.job_group else []
        if self._launcher is not None:  # autoscaled nodes: one job each; no new ones from now on
            self._launcher.close()
            threads += self._launcher.threads()
            groups += self._launcher.groups()
        grace_end = time.monotonic() + max(0.0, min(graceful, deadline - time.monotonic()))
        for t in threads:
            t.join(max(0.0, grace_end - time.monotonic()))
        if not threads or any(t.is_alive() for t in threads):
            for group in groups:
                try:
                    sc.cancelJobGroup(group)
                except Exception as e:  # SparkContext already stopped: its tasks are gone too
                    logger.debug("cancelJobGroup failed: %s", e)
        left = procs.wait_gone(self._head_records + self._worker_records, max(0.0, deadline - time.monotonic()))
        if left:
            logger.warning("killing %d Ray process(es) that outlived shutdown: %s", len(left), [r.pid for r in left])
            procs.terminate(left, grace=1.0)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        try:
            poll_until(lambda: not any(spark_env.job_has_active_tasks(sc, g) for g in groups),
                       timeout=max(0.0, deadline - time.monotonic()), poll=0.05)
        except Exception:  # SparkContext stopped
            pass
        if self._head is not None:
            self._head.stop(max(0.1, deadline - time.monotonic()))
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        spark_env.release_slots(str(self.cluster_id))
        if self._saved_env:
            self._restore_env()
        if self._entry_points:
            ray_entry_points.uninstall()
            self._entry_points = False
        with self._lock:
            self._state = ClusterState.STOPPED
        self._stopped.set()
        logger.info("Ray cluster %s shut down in %.1fs", self.cluster_id, time.monotonic() - t0)

    def _disconnect_driver(self) -> None:
        """ray.shutdown() if this driver is connected to this cluster (it is about to vanish)."""
        try:
            import ray

            if ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address:
                _ray.disconnect()
        except Exception as e:
            logger.debug("ray.shutdown() failed: %s", e)

    def __enter__(self) -> "RayClusterOnSpark":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _merge(a: List[procs.ProcessRecord], b: List[procs.ProcessRecord]) -> List[procs.ProcessRecord]:
    seen = set(a)
    return a + [r for r in b if r not in seen]
