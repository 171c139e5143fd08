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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from ray_on_spark import _ray, spark_env
from ray_on_spark.data import ray_entry_points
from ray_on_spark.errors import HeadStartError, RayOnSparkError, WorkerNodesStartError
from ray_on_spark.on_spark import diagnostics, hooks, nodes, ray_start
from ray_on_spark.on_spark.autoscaling.launcher import NodeLauncher
from ray_on_spark.on_spark.autoscaling.start import start_autoscaling
from ray_on_spark.on_spark.plan import ClusterPlan, WorkerPlan
from ray_on_spark.on_spark.progress import StartProgress
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_PARTITION, NODE_ID_RESOURCE
from ray_on_spark.on_spark.resources import MemoryShare
from ray_on_spark.on_spark.worker_task import collect_logs_path, run_worker_node
from ray_on_spark.runtime import procs
from ray_on_spark.runtime.ports import free_port_in_range, free_ports, port_open
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
        self._job_thread: Optional[threading.Thread] = None
        self._job_results: Optional[List[str]] = None
        self._job_error: Optional[BaseException] = None
        self._saved_env: Dict[str, Optional[str]] = {}
        self._entry_points = False  # whether start() routed Ray's from_spark / to_spark through ours
        self._client = None
        self._stop_monitor = threading.Event()
        self._stopped = threading.Event()
        self._monitor_thread: Optional[threading.Thread] = None
        self._dead_nodes: Dict[str, _ray.NodeView] = {}
        #: Healing: when the barrier job was resubmitted, and whether the cluster gave up on it.
        self._resubmits: List[float] = []
        self._healing = False
        self._resubmitted_ms = 0
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

    def _start_job(self) -> None:
        sc = self.spark.sparkContext
        plan = self.plan
        worker_plan = self.worker
        n = plan.num_worker_nodes

        def task(rows: Iterator) -> Iterator[str]:
            return run_worker_node(worker_plan, rows)

        def run() -> None:
            try:
                sc.setJobGroup(self.job_group, f"{self.spark_ui_label()}: {n} worker node(s), one per task", True)
                rdd = sc.parallelize(range(n), n).barrier().mapPartitions(task)
                if plan.use_task_profile:
                    rdd = rdd.withResources(
                        spark_env.task_resource_profile(plan.num_cpus_worker_node, plan.num_gpus_worker_node)
                    )
                self._job_results = rdd.collect()
            except BaseException as e:  # reported by _check_job / shutdown
                self._job_error = e

        self._job_thread = spark_env.spark_thread(run, f"ray_on_spark-{self.cluster_id}")
        self._job_thread.start()
        self.progress.step("barrier Spark job of %d task(s) submitted (job group %s)", n, self.job_group)
        hooks.call(self.hook, "on_spark_job_created", self.job_group)

    def _check_failed(self) -> None:
        """Raise at once when the head or the job has already failed (no waiting for a deadline)."""
        if self._head is not None and self._head.proc.poll() is not None:
            raise HeadStartError(f"The Ray head node failed to start on the driver:\n{self._read_head_output()}")
        if self._job_thread is not None and not self._job_thread.is_alive():
            raise WorkerNodesStartError(self._job_failure_text())

    def _job_failure_text(self) -> str:
        if self._job_error is not None:
            return diagnostics.spark_job_failure(str(self._job_error))
        return diagnostics.worker_start_failure(self._job_results or [], self.temp_dir)

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
            self.progress.step("head node up at %s", self.address)

            def joined() -> Optional[List[_ray.NodeView]]:
                views = self._our_nodes()
                self.progress.nodes_joined(len(views))
                return views if len(views) >= n else None

            registered = wait_until(
                joined,
                timeout=self.plan.start_timeout,
                what=f"{n} Ray worker node(s) to register",
                check=self._check_failed,
            )
        self._record_worker_supervisors(registered)

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
        job_reported = False
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
                logger.warning(
                    "Ray worker node %s (Spark partition %s, %s) died: %s. Its Spark task restarts it; "
                    "the cluster is degraded until then.",
                    v.node_id[:12], v.labels.get(LABEL_PARTITION), v.address, v.death_reason or "no reason given",
                )
            if self.plan.autoscaling:
                continue  # nodes come and go with their one-task jobs; the autoscaler watches them
            # Healed when the resubmitted job's own nodes are all up: the lost job's nodes may still
            # be listed alive for a few seconds, until the GCS's health checks give up on them.
            if self._healing and len(nodes.started_since(nodes.ours(views, self.cluster_id), self._resubmitted_ms)) >= \
                    self.plan.num_worker_nodes:
                self._healing = False
                logger.info("Ray cluster %s healed: %d worker node(s) back", self.cluster_id, self.plan.num_worker_nodes)
            if self._job_thread is not None and not self._job_thread.is_alive() and self._heal_failure is None:
                if not job_reported:
                    job_reported = True
                    logger.error("The Ray cluster %s lost its Spark job: %s", self.cluster_id,
                                 self._job_failure_text())
                if self._resubmit_job():
                    job_reported = False

    def _resubmit_job(self) -> bool:
        """Heal: submit the lost barrier job again once Spark has its slots; True when submitted.

        Within ``resubmit_window_s`` at most ``max_job_resubmits`` times, then the cluster is
        ``failed`` with an error saying so (a job that keeps failing is not retried forever).
        While Spark lacks the slots (the lost executor not relaunched yet) it waits, saying so once.
        """
        if self._head is not None and self._head.proc.poll() is not None:
            self._heal_failure = "the Ray head node is gone"
            logger.error("Ray cluster %s cannot heal: its head node exited; call shutdown_ray_cluster()",
                         self.cluster_id)
            return False
        now = time.monotonic()
        policy = RestartPolicy(self.plan.max_job_resubmits, self.plan.resubmit_window_s)
        recent = policy.recent(self._resubmits, now)
        if not policy.allows(recent, now):
            self._heal_failure = (f"its Spark job was lost {len(recent) + 1} times within "
                                  f"{self.plan.resubmit_window_s:.0f}s")
            logger.error("Ray cluster %s gives up healing: %s; not resubmitting it again. Call "
                         "shutdown_ray_cluster() and set up a new cluster.", self.cluster_id, self._heal_failure)
            return False
        sc = self.spark.sparkContext
        profile = (spark_env.task_resource_profile(self.plan.num_cpus_worker_node, self.plan.num_gpus_worker_node)
                   if self.plan.use_task_profile else None)
        slots = spark_env.max_concurrent_tasks(sc, profile)
        if slots < self.plan.num_worker_nodes:
            if not self._waiting_for_slots_logged:
                self._waiting_for_slots_logged = True
                logger.warning("Ray cluster %s is degraded: its Spark job was lost; resubmitting it when Spark has "
                               "%d task slot(s) again (now %d)", self.cluster_id, self.plan.num_worker_nodes, slots)
            return False
        with self._lock:  # not while shutdown() collects the job to cancel
            if self._state != ClusterState.RUNNING:
                return False
            self._resubmits = recent + [now]
            self._resubmitted_ms = int(time.time() * 1000)
            self._waiting_for_slots_logged = False
            self._job_results, self._job_error = None, None
            self._healing = True
            logger.warning("Ray cluster %s is healing: resubmitting its Spark job (attempt %d in the last %.0fs)",
                           self.cluster_id, len(self._resubmits), self.plan.resubmit_window_s)
            self._start_job()
        return True

    def status(self) -> Dict[str, object]:
        """``{"state", "health", "expected_worker_nodes", "alive_worker_nodes", "degraded", "resubmits",
        "dead_worker_nodes"}``; ``health`` (a running cluster): ready, degraded, healing or failed."""
        running = self._state == ClusterState.RUNNING
        alive = len(self.worker_nodes()) if running else 0
        return {
            "state": self._state.value,
            "health": self._health(alive).value if running else None,
            "expected_worker_nodes": self.plan.nodes_at_start,
            "alive_worker_nodes": alive,
            "degraded": running and alive < self.plan.nodes_at_start,
            "resubmits": len(self._resubmits),
            "dead_worker_nodes": [
                {"node_id": v.node_id, "partition": v.labels.get(LABEL_PARTITION), "reason": v.death_reason}
                for v in self._dead_nodes.values()
            ],
        }

    def _health(self, alive: int) -> Health:
        if self._heal_failure is not None:
            return Health.FAILED
        if self._healing:
            return Health.HEALING
        job_lost = not self.plan.autoscaling and self._job_thread is not None and not self._job_thread.is_alive()
        return Health.READY if alive >= self.plan.nodes_at_start and not job_lost else Health.DEGRADED

    # ----------------------------------------------------------------- env
    def _export_env(self) -> None:
        """While the cluster runs, ``ray.init()`` with no address connects to it, with its token."""
        assert self.address is not None
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ["RAY_ADDRESS"] = self.address
        _ray.use_auth(self.auth_token)

    def _restore_env(self) -> None:
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
        threads = [t for t in [self._job_thread] if t is not None]
        groups = [self.job_group] if self._job_thread is not None and self.job_group else []
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
                ray.shutdown()
        except Exception as e:
            logger.debug("ray.shutdown() failed: %s", e)

    def __enter__(self) -> "RayClusterOnSpark":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def _merge(a: List[procs.ProcessRecord], b: List[procs.ProcessRecord]) -> List[procs.ProcessRecord]:
    seen = set(a)
    return a + [r for r in b if r not in seen]
