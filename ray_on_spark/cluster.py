"""RayClusterOnSpark: the one object that owns a Ray-on-Spark cluster's processes.

It starts the head (through a supervisor) on the driver and, at the same moment, the
barrier Spark job whose tasks start the worker nodes; worker nodes retry their GCS
connection until the head answers, so the two start in parallel instead of one after
the other.  ``shutdown()`` cancels the job group, stops the head, and waits until every
process it knows about is gone.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ray_on_spark import gcs, procs, spark_env
from ray_on_spark.options import labels_arg, to_cli_args
from ray_on_spark.ports import free_ports
from ray_on_spark.resources import MemoryShare, hosts_summary
from ray_on_spark.worker_task import (
    LABEL_CLUSTER,
    LABEL_CTIME,
    LABEL_PARTITION,
    LABEL_PID,
    WorkerPlan,
    describe_hosts_task,
    log_collection_args,
    merged_resources_option,
    run_autoscaled_node,
    run_worker_node,
)
from ray_on_spark.autoscale import NODE_ID_RESOURCE, NodeLauncher, autoscaled_share, autoscaler_config

logger = logging.getLogger(__name__)

_ENV_KEYS = ("RAY_ADDRESS", gcs.AUTH_MODE_ENV, gcs.AUTH_TOKEN_ENV)


class RayOnSparkError(RuntimeError):
    """Setting up or running the Ray cluster on Spark failed; the message says why."""


@dataclass(frozen=True)
class HeadPlan:
    host: str
    port: int
    client_server_port: int
    dashboard_port: Optional[int]
    dashboard_host: str
    num_cpus: int
    num_gpus: int
    memory: MemoryShare
    options: Dict[str, object] = field(default_factory=dict)
    #: The driver's GPU addresses the head may use (num_gpus_head_node of spark.driver.resource.gpu).
    gpu_addresses: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPlan:
    """Every decision made before anything starts (validated by :mod:`ray_on_spark.api`)."""

    num_worker_nodes: int
    num_cpus_worker_node: Optional[int]  # None: the default task profile (spark.task.cpus)
    num_gpus_worker_node: int
    use_task_profile: bool
    head: HeadPlan
    worker: WorkerPlan
    temp_dir: str
    start_timeout: float = 120.0
    #: Autoscaling when set and below num_worker_nodes (then num_worker_nodes is the maximum).
    min_worker_nodes: Optional[int] = None
    upscaling_speed: float = 1.0
    idle_timeout_minutes: float = 1.0

    @property
    def autoscaling(self) -> bool:
        return self.min_worker_nodes is not None and self.min_worker_nodes < self.num_worker_nodes

    @property
    def nodes_at_start(self) -> int:
        """Worker nodes setup waits for: all of them, or the minimum when autoscaling."""
        return self.min_worker_nodes if self.autoscaling else self.num_worker_nodes  # type: ignore[return-value]


def _ray_start_head_command(plan: ClusterPlan, autoscaling_config: Optional[str] = None) -> List[str]:
    h = plan.head
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start",
        "--head", "--block",
        f"--node-ip-address={h.host}",
        f"--port={h.port}",
        f"--ray-client-server-port={h.client_server_port}",
        f"--num-cpus={h.num_cpus}",
        f"--num-gpus={h.num_gpus}",
        f"--memory={h.memory.heap_bytes}",
        f"--object-store-memory={h.memory.object_store_bytes}",
        f"--temp-dir={os.path.join(plan.temp_dir, 'head')}",
        "--dashboard-agent-listen-port=0",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
        f"--labels={labels_arg({LABEL_CLUSTER: plan.worker.cluster_id})}",
    ]
    if h.dashboard_port is None:
        cmd.append("--include-dashboard=false")
    else:
        cmd += [f"--dashboard-host={h.dashboard_host}", f"--dashboard-port={h.dashboard_port}"]
    options: Dict[str, object] = dict(h.options)
    if autoscaling_config is not None:
        # Ray's monitor runs the autoscaler with our node provider; the head is provider node 0.
        cmd.append(f"--autoscaling-config={autoscaling_config}")
        options = merged_resources_option(options, {NODE_ID_RESOURCE: 0})
    return cmd + to_cli_args(options)


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:8]


def make_temp_dir(root: Optional[str], cluster_id: str) -> str:
    """A private (0700) directory for the head's files; removed at shutdown."""
    if root is not None:
        os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"ros-{cluster_id}-", dir=root)


def pick_head_ports(host: str, with_dashboard: bool) -> Dict[str, Optional[int]]:
    ports = free_ports(3)
    return {"port": ports[0], "client_server_port": ports[1], "dashboard_port": ports[2] if with_dashboard else None}


class RayClusterOnSpark:
    """Owns one Ray cluster on Spark: the head's process tree and the barrier job.

    Use as a context manager or call :meth:`shutdown`; shutdown is idempotent and also
    runs at interpreter exit.
    """

    def __init__(self, spark, plan: ClusterPlan):
        self.spark = spark
        self.plan = plan
        self.cluster_id = plan.worker.cluster_id
        self.address = f"{plan.head.host}:{plan.head.port}"
        self.client_address = f"ray://{plan.head.host}:{plan.head.client_server_port}"
        self.dashboard_url = (
            f"http://{plan.head.dashboard_host}:{plan.head.dashboard_port}" if plan.head.dashboard_port else None
        )
        self.job_group = f"ray_on_spark-{self.cluster_id}"
        self.temp_dir = plan.temp_dir
        self.head_log = os.path.join(plan.temp_dir, "head.log")
        self.setup_seconds: Optional[float] = None
        self._lock = threading.RLock()
        self._state = "new"
        self._head: Optional[subprocess.Popen] = None
        self._head_records: List[procs.ProcessRecord] = []
        self._worker_records: List[procs.ProcessRecord] = []
        self._job_thread: Optional[threading.Thread] = None
        self._job_results: Optional[List[str]] = None
        self._job_error: Optional[BaseException] = None
        self._saved_env: Dict[str, Optional[str]] = {}
        self._client = None
        self._stop_monitor = threading.Event()
        self._monitor_thread: Optional[threading.Thread] = None
        self._dead_nodes: Dict[str, gcs.NodeView] = {}
        self._launcher: Optional[NodeLauncher] = None
        self._autoscaling_config: Optional[str] = None
        #: The one shape of every autoscaled worker node (decided before the head starts).
        self.worker_share: Optional[MemoryShare] = None

    # ----------------------------------------------------------------- start
    def start(self) -> "RayClusterOnSpark":
        t0 = time.monotonic()
        with self._lock:
            if self._state != "new":
                raise RayOnSparkError(f"cluster {self.cluster_id} was already started")
            self._state = "starting"
        try:
            if self.plan.autoscaling:
                self._start_launcher()
            self._start_head()
            if not self.plan.autoscaling:
                self._start_job()
            self._wait_ready()
        except BaseException:
            self.shutdown()
            raise
        self._export_env()
        self._head_records = procs.tree(self._head.pid)
        with self._lock:
            self._state = "running"
        self._monitor_thread = threading.Thread(target=self._monitor, name=f"ray_on_spark-monitor-{self.cluster_id}", daemon=True)
        self._monitor_thread.start()
        self.setup_seconds = time.monotonic() - t0
        logger.info(
            "Ray cluster %s on Spark is up in %.1fs: head %s, %d worker node(s)%s, dashboard %s",
            self.cluster_id, self.setup_seconds, self.address, self.plan.nodes_at_start,
            f" (autoscaling up to {self.plan.num_worker_nodes})" if self.plan.autoscaling else "", self.dashboard_url,
        )
        return self

    def _start_launcher(self) -> None:
        """Autoscaling: size the nodes, start the driver's node launcher, write Ray's autoscaler config.

        The size comes from a short barrier probe with one task per Spark slot (the same
        host facts the barrier job gathers), so a node fits whichever host it lands on.
        """
        sc = self.spark.sparkContext
        plan = self.plan
        worker_plan = plan.worker
        profile = (spark_env.task_resource_profile(plan.num_cpus_worker_node or 1, plan.num_gpus_worker_node)
                   if plan.use_task_profile else None)
        slots = max(1, spark_env.max_concurrent_tasks(sc, profile))

        def probe(rows):
            return describe_hosts_task(worker_plan, rows)

        rdd = sc.parallelize(range(slots), slots).barrier().mapPartitions(probe)
        if profile is not None:
            rdd = rdd.withResources(profile)
        infos = [json.loads(x) for x in rdd.collect()]
        hosts = hosts_summary(infos, worker_plan.driver_host, worker_plan.driver_host_reserved)
        share = autoscaled_share(hosts, plan.num_worker_nodes, worker_plan.executor_footprint,
                                 worker_plan.requested_heap, worker_plan.requested_object_store)
        self.worker_share = share

        def task(rows):
            return run_autoscaled_node(worker_plan, share, rows)

        def submit(node_id: str, group: str) -> List[str]:
            sc.setJobGroup(group, f"Ray worker node {node_id} of ray_on_spark cluster {self.cluster_id} (autoscaled)", True)
            node_rdd = sc.parallelize([node_id], 1).mapPartitions(task)
            if profile is not None:
                node_rdd = node_rdd.withResources(profile)
            return node_rdd.collect()

        self._launcher = NodeLauncher(
            self.cluster_id, self.temp_dir, submit,
            cancel=sc.cancelJobGroup,
            is_task_running=lambda group: spark_env.job_group_running(sc, group),
        )
        h = plan.head
        config = autoscaler_config(
            cluster_id=self.cluster_id,
            head_resources={"CPU": h.num_cpus, "GPU": h.num_gpus, "memory": h.memory.heap_bytes,
                            "object_store_memory": h.memory.object_store_bytes, NODE_ID_RESOURCE: 0},
            worker_resources={"CPU": plan.num_cpus_worker_node or spark_env.task_cpus(sc),
                              "GPU": plan.num_gpus_worker_node, "memory": share.heap_bytes,
                              "object_store_memory": share.object_store_bytes},
            min_workers=plan.min_worker_nodes or 0,
            max_workers=plan.num_worker_nodes,
            upscaling_speed=plan.upscaling_speed,
            idle_timeout_minutes=plan.idle_timeout_minutes,
            launcher_url=self._launcher.url,
            secret_path=self._launcher.secret_path,
        )
        self._autoscaling_config = os.path.join(self.temp_dir, "autoscaler.json")
        with open(self._autoscaling_config, "w") as f:
            json.dump(config, f)
        logger.info("autoscaling %d..%d worker nodes of %s heap + %s object store each",
                    plan.min_worker_nodes, plan.num_worker_nodes, share.heap_bytes, share.object_store_bytes)

    def _start_head(self) -> None:
        env = dict(os.environ)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["TMPDIR"] = self.temp_dir  # stray files of Ray's processes stay in our private dir
        # The GCS declares a silent node dead after period x threshold (Ray's default 3 s x 5);
        # a lost executor should leave the cluster within a few seconds instead.
        env.setdefault("RAY_health_check_period_ms", "1000")
        env.setdefault("RAY_health_check_timeout_ms", "1000")
        env.setdefault("RAY_health_check_failure_threshold", "4")
        env.pop("RAY_ADDRESS", None)
        if self._autoscaling_config:
            env["RAY_enable_autoscaler_v2"] = "0"  # v1's StandardAutoscaler drives our node provider
            env.setdefault("AUTOSCALER_UPDATE_INTERVAL_S", "1")
            # the monitor imports our provider: make this very package importable there
            pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH")) if p)
        # The head sees exactly the driver GPUs it was given (none by default), like the workers.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(self.plan.head.gpu_addresses)
        if self.plan.worker.auth_token:
            env[gcs.AUTH_MODE_ENV] = "token"
            env[gcs.AUTH_TOKEN_ENV] = self.plan.worker.auth_token
        else:
            env[gcs.AUTH_MODE_ENV] = "disabled"
            env.pop(gcs.AUTH_TOKEN_ENV, None)
        cmd = [
            sys.executable, "-m", "ray_on_spark.supervisor",
            "--log", self.head_log,
            "--parent-pid", str(os.getpid()),
            "--start-timeout", str(self.plan.start_timeout),
            # if the driver dies without shutdown(), the supervisor removes the temp dir
            "--cleanup-dir", self.temp_dir,
            *log_collection_args(self.plan.worker.collect_log_dir, f"ray-head-{self.plan.worker.cluster_id}"),
            "--",
        ] + _ray_start_head_command(self.plan, self._autoscaling_config)
        logger.debug("starting Ray head: %s", " ".join(cmd))
        # Own session: a Ctrl-C in the driver's terminal must not kill the head behind
        # our back; we stop it ourselves (and the supervisor follows the driver's death).
        self._head = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        self._head_records = [r for r in [procs.ProcessRecord.of(self._head.pid)] if r]

    def _start_job(self) -> None:
        from pyspark import InheritableThread

        sc = self.spark.sparkContext
        plan = self.plan
        worker_plan = plan.worker
        n = plan.num_worker_nodes

        def task(rows):
            return run_worker_node(worker_plan, rows)

        def run() -> None:
            try:
                sc.setJobGroup(self.job_group, f"Ray worker nodes of ray_on_spark cluster {self.cluster_id}", True)
                rdd = sc.parallelize(range(n), n).barrier().mapPartitions(task)
                if plan.use_task_profile:
                    rdd = rdd.withResources(
                        spark_env.task_resource_profile(plan.num_cpus_worker_node or 1, plan.num_gpus_worker_node)
                    )
                self._job_results = rdd.collect()
            except BaseException as e:  # reported by _check_job / shutdown
                self._job_error = e

        self._job_thread = InheritableThread(target=run, name=f"ray_on_spark-{self.cluster_id}", daemon=True)
        self._job_thread.start()

    def _check_failed(self) -> None:
        """Raise at once when the head or the job has already failed (no waiting for a deadline)."""
        if self._head is not None and self._head.poll() is not None:
            raise RayOnSparkError(
                f"The Ray head node failed to start on the driver:\n{self._read_head_output()}"
            )
        if self._job_thread is not None and not self._job_thread.is_alive():
            raise RayOnSparkError(self._job_failure_text())

    def _job_failure_text(self) -> str:
        if self._job_error is not None:
            text = str(self._job_error)
            return f"The Spark job holding the Ray worker nodes failed: {_short_spark_error(text)}{_executor_hint(text)}"
        errors = [json.loads(r).get("error") or json.loads(r).get("reason") for r in self._job_results or []]
        errors = [e for e in errors if e]
        return ("Ray worker nodes failed to start:\n" + ("\n".join(errors) or "(no error text)")
                + self._head_raylet_tail())

    def _head_raylet_tail(self, lines: int = 15) -> str:
        """The end of the head's raylet log: why workers found no head node (it is gone after shutdown)."""
        logs = sorted(glob.glob(os.path.join(self.temp_dir, "head", "session_*", "logs", "raylet.out")))
        if not logs:
            return ""
        try:
            with open(logs[-1], errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            return ""
        return f"\nThe head's raylet log ({logs[-1]}) ends with:\n" + "".join(tail).rstrip()

    def _read_head_output(self) -> str:
        out = ""
        if self._head is not None and self._head.stdout is not None:
            try:
                out = self._head.stdout.read() or ""
            except Exception:
                pass
        return out.strip() or f"(see {self.head_log})"

    def _wait_ready(self) -> None:
        n = self.plan.nodes_at_start
        with _auth_env(self.plan.worker.auth_token):
            self._client = gcs.wait_until(
                lambda: self._probe_client(),
                timeout=self.plan.start_timeout,
                what="the Ray head's GCS to answer",
                check=self._check_failed,
            )
            nodes = gcs.wait_until(
                lambda: self._our_nodes() if len(self._our_nodes()) >= n else None,
                timeout=self.plan.start_timeout,
                what=f"{n} Ray worker node(s) to register",
                check=self._check_failed,
            )
        self._record_worker_supervisors(nodes)

    def _probe_client(self):
        client = gcs.gcs_client(self.address)
        gcs.list_nodes(client, timeout=1.0)
        return client

    def _our_nodes(self) -> List[gcs.NodeView]:
        return [
            v for v in gcs.list_nodes(self._client, timeout=1.0)
            if v.alive and not v.is_head and v.labels.get(LABEL_CLUSTER) == self.cluster_id
        ]

    def _record_worker_supervisors(self, nodes: List[gcs.NodeView]) -> None:
        """Remember the supervisors of worker nodes on this host, to verify they are gone later."""
        for v in nodes:
            if v.address != self.plan.head.host:
                continue
            try:
                rec = procs.ProcessRecord(int(v.labels[LABEL_PID]), int(v.labels[LABEL_CTIME]) / 1000.0)
            except (KeyError, ValueError):
                continue
            p = rec.process()
            if p is not None:
                exact = procs.ProcessRecord(p.pid, p.create_time())
                if exact not in self._worker_records:
                    self._worker_records.append(exact)

    def _monitor(self, interval: float = 0.5) -> None:
        """Watch the cluster while it runs: say which worker node died and why, and when the job ends.

        The tasks restart dead nodes themselves; this thread only makes it visible on
        the driver (a warning naming the node, its Spark partition and Ray's reason).
        """
        client = None
        job_reported = False
        while not self._stop_monitor.wait(interval):
            if self._state != "running":
                continue
            try:
                client = client or gcs.gcs_client(self.address)
                nodes = gcs.list_nodes(client, timeout=1.0)
            except Exception as e:  # the head may be busy; try again next round
                logger.debug("monitor: GCS probe failed: %s", e)
                continue
            for v in nodes:
                if v.is_head or v.alive or v.labels.get(LABEL_CLUSTER) != self.cluster_id or v.node_id in self._dead_nodes:
                    continue
                self._dead_nodes[v.node_id] = v
                logger.warning(
                    "Ray worker node %s (Spark partition %s, %s) died: %s. Its Spark task restarts it; "
                    "the cluster is degraded until then.",
                    v.node_id[:12], v.labels.get(LABEL_PARTITION), v.address, v.death_reason or "no reason given",
                )
            if self.plan.autoscaling:
                continue  # nodes come and go with their one-task jobs; the autoscaler watches them
            if not job_reported and self._job_thread is not None and not self._job_thread.is_alive():
                job_reported = True
                logger.error("The Ray cluster %s lost its Spark job: %s", self.cluster_id, self._job_failure_text())

    def status(self) -> Dict[str, object]:
        """``{"state", "expected_worker_nodes", "alive_worker_nodes", "degraded", "dead_worker_nodes"}``."""
        alive = len(self.worker_nodes()) if self._state == "running" else 0
        return {
            "state": self._state,
            "expected_worker_nodes": self.plan.nodes_at_start,
            "alive_worker_nodes": alive,
            "degraded": self._state == "running" and alive < self.plan.nodes_at_start,
            "dead_worker_nodes": [
                {"node_id": v.node_id, "partition": v.labels.get(LABEL_PARTITION), "reason": v.death_reason}
                for v in self._dead_nodes.values()
            ],
        }

    # ----------------------------------------------------------------- env
    def _export_env(self) -> None:
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ["RAY_ADDRESS"] = self.address
        if self.plan.worker.auth_token:
            os.environ[gcs.AUTH_MODE_ENV] = "token"
            os.environ[gcs.AUTH_TOKEN_ENV] = self.plan.worker.auth_token
        gcs.refresh_auth_config()

    def _restore_env(self) -> None:
        _set_env(self._saved_env)
        self._saved_env = {}
        gcs.refresh_auth_config()

    # ----------------------------------------------------------------- info
    def worker_nodes(self) -> List[gcs.NodeView]:
        """Alive worker nodes of this cluster, one per Spark partition, as the GCS reports them.

        After a node is restarted in its task, the GCS lists the dead one as alive until
        its health checks fail; the newest node of each partition is the real one.
        """
        with _auth_env(self.plan.worker.auth_token):
            newest: Dict[str, gcs.NodeView] = {}
            for v in self._our_nodes():
                part = v.labels.get(LABEL_PARTITION, "")
                if part not in newest or v.start_time_ms > newest[part].start_time_ms:
                    newest[part] = v
            return sorted(newest.values(), key=lambda v: _partition_order(v.labels.get(LABEL_PARTITION, "")))

    @property
    def state(self) -> str:
        return self._state

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
            if self._state in ("stopped", "stopping"):
                return
            self._state = "stopping"
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
            if self._head.poll() is None:
                self._head.terminate()  # the supervisor stops the whole head tree
        sc = self.spark.sparkContext
        threads = [t for t in [self._job_thread] if t is not None]
        groups = [self.job_group] if self._job_thread is not None else []
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
            while any(spark_env.job_has_active_tasks(sc, g) for g in groups) and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception:  # SparkContext stopped
            pass
        if self._head is not None:
            try:
                self._head.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._head.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if self._saved_env:
            self._restore_env()
        with self._lock:
            self._state = "stopped"
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


def _partition_order(label: str):
    """Barrier nodes are labelled 0, 1, ...; autoscaled ones n1, n2, ... (after them)."""
    digits = label.lstrip("n")
    return (label.startswith("n"), int(digits) if digits.isdigit() else 0)


def _short_spark_error(text: str) -> str:
    """The Python traceback of the failed task, without the JVM stack frames around it."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("at ")]
    return "\n".join(lines[:60])


def _executor_hint(text: str) -> str:
    if "No module named 'ray_on_spark'" in text or "No module named 'ray'" in text:
        return (
            "\nFix: the executors' Python cannot import ray_on_spark/ray. Install them there, or point the "
            "executors at a Python that has them: set PYSPARK_PYTHON before creating the SparkSession "
            "(or spark.pyspark.python with spark-submit), and spark.executorEnv.PATH if `ray` must be on PATH."
        )
    return ""


def _merge(a: List[procs.ProcessRecord], b: List[procs.ProcessRecord]) -> List[procs.ProcessRecord]:
    seen = set(a)
    return a + [r for r in b if r not in seen]


class _auth_env:
    """Temporarily expose the cluster's token to this process's Ray core (for GCS probes)."""

    def __init__(self, token: Optional[str]):
        self.token = token

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in (gcs.AUTH_MODE_ENV, gcs.AUTH_TOKEN_ENV)}
        wanted = {gcs.AUTH_MODE_ENV: "token", gcs.AUTH_TOKEN_ENV: self.token} if self.token else {
            gcs.AUTH_MODE_ENV: "disabled", gcs.AUTH_TOKEN_ENV: None}
        self.changed = wanted != self.saved
        if self.changed:  # re-reading Ray's config is only done when something differs
            _set_env(wanted)
            gcs.refresh_auth_config()
        return self

    def __exit__(self, *exc):
        if self.changed:
            _set_env(self.saved)
            gcs.refresh_auth_config()


def _set_env(values: Dict[str, Optional[str]]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
