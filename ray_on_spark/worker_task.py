"""The body of the long-running barrier Spark task: one Ray worker node per task.

Flow of every task (all tasks of the barrier stage run it together):

1. describe its host (memory, /dev/shm, which executor it runs in) and
   ``allGather`` the descriptions, so each task knows how many Ray nodes and executors
   share its host and can compute a memory share that never overcommits the host;
2. start a :mod:`ray_on_spark.supervisor` that runs ``ray start --block`` with the
   task's CPUs, its GPU *addresses* and that memory share, and wait for READY/FAILED;
3. ``allGather`` the outcome: if any node failed, every task stops its node and
   *returns* the errors, so the driver gets the real error text at once (raising would
   make Spark retry the whole barrier stage several times first);
4. otherwise block until the node ends: the job is cancelled (Spark kills this Python
   worker, the supervisor notices its parent is gone) or the head goes away.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from ray_on_spark import procs, resources
from ray_on_spark.options import labels_arg, to_cli_args

logger = logging.getLogger(__name__)

LABEL_CLUSTER = "ray-on-spark-cluster"
LABEL_PARTITION = "ray-on-spark-partition"
LABEL_PID = "ray-on-spark-supervisor-pid"
LABEL_CTIME = "ray-on-spark-supervisor-ctime-ms"


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a task needs, decided on the driver and shipped with the closure."""

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
    #: A node that dies is restarted in its task, at most this many times per window.
    max_restarts: int = 3
    restart_window_s: float = 120.0

    @property
    def head_address(self) -> str:
        return f"{self.head_host}:{self.head_port}"


def host_ip_towards(host: str) -> str:
    """The local IP this machine uses to reach ``host`` (what Ray calls the node IP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, 1))
        return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        s.close()


def host_memory_bytes() -> int:
    """Physical memory of this host, or the cgroup's limit when that is lower."""
    import psutil

    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
            if raw.isdigit():
                total = min(total, int(raw))
        except OSError:
            pass
    return total


def shm_bytes() -> int:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return host_memory_bytes()


def executor_key() -> str:
    """Identify the Spark executor (JVM) this Python worker belongs to."""
    import psutil

    p = psutil.Process()
    try:
        for parent in p.parents():
            if "java" in parent.name():
                return f"{parent.pid}:{int(parent.create_time())}"
    except psutil.Error:
        pass
    return f"ppid-{os.getppid()}"


def describe_host(plan: WorkerPlan, partition: int) -> dict:
    return {
        "partition": partition,
        "host": host_ip_towards(plan.head_host),
        "total_memory": host_memory_bytes(),
        "shm_bytes": shm_bytes(),
        "executor": executor_key(),
    }


def merged_resources_option(options: Dict[str, object], extra: Optional[Dict[str, float]]) -> Dict[str, object]:
    """``options`` with ``extra`` custom resources added to its ``resources`` (a dict or a JSON string)."""
    if not extra:
        return dict(options)
    merged = dict(options)
    given = merged.get("resources") or {}
    if isinstance(given, str):
        given = json.loads(given)
    merged["resources"] = {**dict(given), **extra}
    return merged


def ray_start_command(
    plan: WorkerPlan, num_cpus: int, gpus: List[str], share: resources.MemoryShare, temp_dir: str, labels: Dict[str, str],
    extra_resources: Optional[Dict[str, float]] = None,
) -> List[str]:
    return [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        f"--address={plan.head_address}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={len(gpus)}",
        f"--memory={share.heap_bytes}",
        f"--object-store-memory={share.object_store_bytes}",
        f"--temp-dir={temp_dir}",
        # Several nodes may share a host: let the OS pick every port, no ranges to collide.
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--dashboard-agent-listen-port=0",
        "--disable-usage-stats",
        f"--labels={labels_arg(labels)}",
        *to_cli_args(merged_resources_option(plan.worker_options, extra_resources)),
    ]


def node_env(plan: WorkerPlan, gpus: List[str], temp_dir: str) -> Dict[str, str]:
    env = dict(os.environ)
    # Ray's processes (the dashboard's multiprocessing among them) leave files in
    # TMPDIR when they are killed; keep those inside the node's own temp dir.
    env["TMPDIR"] = temp_dir
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    if plan.auth_token:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = plan.auth_token
    else:
        env.pop("RAY_AUTH_TOKEN", None)
        env["RAY_AUTH_MODE"] = "disabled"
    # The node sees exactly the GPUs Spark assigned to this task, nothing else.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env.pop("RAY_ADDRESS", None)
    return env


class NodeProcess:
    """The supervisor subprocess and its stdout lines, read by a thread."""

    def __init__(self, cmd: List[str], env: Dict[str, str], what: str = "Ray worker node", cwd: Optional[str] = None):
        self.what = what
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            # Own session: when the executor dies, pyspark's daemon SIGHUPs its process group;
            # the supervisor must not die with it before tearing its node down (it notices
            # its parent's death by itself).
            start_new_session=True,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.pid = self.proc.pid
        self.record = procs.ProcessRecord.of(self.pid)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> Optional[str]:
        """None when READY, else the failure text."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                return f"{self.what} did not report ready within {timeout:.0f}s"
            if line is None:
                return "supervisor exited without output"
            if line == "READY":
                return None
            if line.startswith("FAILED"):
                return line + "\n" + self.rest()

    def rest(self, timeout: float = 5.0) -> str:
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line is None:
                break
            out.append(line)
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def log_collection_args(collect_dir: Optional[str], name: str) -> List[str]:
    """Supervisor options that copy the node's logs to ``collect_dir/name-<pid>`` at teardown."""
    return ["--collect-logs-to", os.path.join(collect_dir, name)] if collect_dir else []


def launch_node(
    plan: WorkerPlan, partition: object, num_cpus: int, gpus: List[str], share: resources.MemoryShare,
    extra_resources: Optional[Dict[str, float]] = None,
) -> NodeProcess:
    """Start one supervised ``ray start --block`` for this task (a fresh private temp dir each time)."""
    temp_dir = tempfile.mkdtemp(prefix=f"ros-{plan.cluster_id}-w{partition}-", dir=plan.temp_root)
    sup_cmd = [
        sys.executable, "-m", "ray_on_spark.supervisor",
        "--log", os.path.join(temp_dir, "ray-start.log"),
        "--parent-pid", str(os.getpid()),
        "--watch-host", plan.head_host,
        "--watch-port", str(plan.head_port),
        "--cleanup-dir", temp_dir,
        "--start-timeout", str(plan.start_timeout),
        *log_collection_args(plan.collect_log_dir, f"ray-worker-{plan.cluster_id}-p{partition}"),
        "--",
    ]
    # The supervisor fills in its own pid and create time (unknown until it runs), so
    # the driver can find and verify it through the node's labels.
    labels = {
        LABEL_CLUSTER: plan.cluster_id,
        LABEL_PARTITION: str(partition),
        LABEL_PID: "{supervisor_pid}",
        LABEL_CTIME: "{supervisor_ctime}",
    }
    # Ray makes its temp dir world-writable; keeping it inside our 0700 dir keeps it private.
    cmd = sup_cmd + ray_start_command(plan, num_cpus, gpus, share, os.path.join(temp_dir, "r"), labels, extra_resources)
    return NodeProcess(cmd, node_env(plan, gpus, temp_dir))


def run_worker_node(plan: WorkerPlan, _rows: Iterator) -> Iterator[str]:
    """Barrier task body (see module docstring). Yields JSON status records."""
    from pyspark import BarrierTaskContext

    from ray_on_spark.supervisor import EXIT_HEAD_LOST, EXIT_PARENT_LOST, EXIT_TERMINATED

    ctx = BarrierTaskContext.get()
    partition = ctx.partitionId()
    me = describe_host(plan, partition)
    infos = [json.loads(s) for s in ctx.allGather(json.dumps(me))]
    where = f"Ray worker node for Spark partition {partition} on {me['host']}"

    error: Optional[str] = None
    node: Optional[NodeProcess] = None
    try:
        hosts = resources.hosts_summary(infos, plan.driver_host, plan.driver_host_reserved)
        share = resources.worker_memory_share(
            hosts[me["host"]], plan.executor_footprint, plan.requested_heap, plan.requested_object_store
        )
        task_gpus = ctx.resources().get("gpu")
        gpus = list(resources.gpu_addresses_for_node(task_gpus.addresses if task_gpus else [], plan.num_gpus))
        num_cpus = int(ctx.cpus())
        if plan.strict_mode:
            resources.check_strict(num_cpus, share)
        node = launch_node(plan, partition, num_cpus, gpus, share)
        error = node.wait_ready(plan.start_timeout + 10)
        if error:
            error = f"{where} failed to start: {error}"
    except Exception as e:  # resource arithmetic or spawn failure: report, don't retry
        error = f"{where} could not be planned: {e}"

    outcomes = [json.loads(s) for s in ctx.allGather(json.dumps({"partition": partition, "error": error}))]
    failed = [o for o in outcomes if o["error"]]
    if failed:
        if node is not None:
            node.stop()
        if error:
            yield json.dumps({"partition": partition, "status": "failed", "error": error})
        return

    # Keep the slot's node alive: a node that dies is restarted in this same task,
    # unless it keeps dying (then the task fails, visibly, instead of looping).
    assert node is not None
    deaths: List[float] = []
    while True:
        rc = node.proc.wait()
        reason = node.rest()
        if rc in (EXIT_TERMINATED, EXIT_HEAD_LOST, EXIT_PARENT_LOST):  # the cluster is shutting down
            yield json.dumps({"partition": partition, "status": "stopped", "reason": reason})
            return
        now = time.monotonic()
        deaths = [t for t in deaths if now - t < plan.restart_window_s] + [now]
        if len(deaths) > plan.max_restarts:
            raise RuntimeError(
                f"{where} died {len(deaths)} times within {plan.restart_window_s:.0f}s; not restarting it again. "
                f"Last exit (supervisor code {rc}): {reason[-2000:]}"
            )
        logger.warning("%s died (supervisor code %s); restarting it in the same Spark task", where, rc)
        node = launch_node(plan, partition, num_cpus, gpus, share)
        restart_error = node.wait_ready(plan.start_timeout + 10)
        if restart_error:
            node.stop()
            raise RuntimeError(f"{where} died and could not be restarted: {restart_error}")


def describe_hosts_task(plan: WorkerPlan, _rows: Iterator) -> Iterator[str]:
    """Barrier probe for autoscaling: one description per task slot, so the driver can size nodes."""
    from pyspark import BarrierTaskContext

    yield json.dumps(describe_host(plan, BarrierTaskContext.get().partitionId()))


def run_autoscaled_node(plan: WorkerPlan, share: resources.MemoryShare, rows: Iterator) -> Iterator[str]:
    """Body of an autoscaled node's one-task Spark job: run node ``id`` until it is told to stop.

    No barrier, no restarts: if the node dies the task *returns*, the job ends, and Ray's
    autoscaler (which sees the node gone) launches a new one if there is still demand.
    Raising instead would make Spark retry the task behind the autoscaler's back.
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    node_id = str(next(iter(rows)))
    where = f"autoscaled Ray worker node {node_id} on {host_ip_towards(plan.head_host)}"
    try:
        task_gpus = ctx.resources().get("gpu")
        gpus = list(resources.gpu_addresses_for_node(task_gpus.addresses if task_gpus else [], plan.num_gpus))
        num_cpus = int(ctx.cpus())
        if plan.strict_mode:
            resources.check_strict(num_cpus, share)
        node = launch_node(plan, f"n{node_id}", num_cpus, gpus, share, {"NODE_ID_AS_RESOURCE": float(node_id)})
    except Exception as e:
        yield json.dumps({"node_id": node_id, "status": "failed", "error": f"{where} could not be planned: {e}"})
        return
    error = node.wait_ready(plan.start_timeout + 10)
    if error:
        node.stop()
        yield json.dumps({"node_id": node_id, "status": "failed", "error": f"{where} failed to start: {error}"})
        return
    rc = node.proc.wait()
    yield json.dumps({"node_id": node_id, "status": "stopped", "code": rc, "reason": node.rest()[-2000:]})
