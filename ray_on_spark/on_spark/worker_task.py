"""The body of the long-running barrier Spark task: one Ray worker node per task.

Flow of every task (all tasks of the barrier stage run it together):

1. describe its host (memory, /dev/shm, which executor it runs in) and
   ``allGather`` the descriptions, so each task knows how many Ray nodes and executors
   share its host and can compute a memory share that never overcommits the host;
2. start a :mod:`ray_on_spark.runtime.supervisor` that runs ``ray start`` with the
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
import tempfile
import time
from typing import Dict, Iterator, List, Optional

from ray_on_spark.errors import WorkerNodesStartError
from ray_on_spark.on_spark import ray_start, resources
from ray_on_spark.on_spark.plan import JobSlice, WorkerPlan
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_CTIME, LABEL_PARTITION, LABEL_PID
from ray_on_spark.runtime import host
from ray_on_spark.runtime.host import executor_key, host_ip_towards
from ray_on_spark.runtime.ports import HeadVerdict, HeadWatch, port_state
from ray_on_spark.runtime.private import short_alias
from ray_on_spark.runtime.restarts import RestartPolicy
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.runtime.supervisor import EXIT_HEAD_LOST, EXIT_PARENT_LOST, EXIT_TERMINATED, HEAD_UNREACHABLE_S

logger = logging.getLogger(__name__)


def describe_host(plan: WorkerPlan, partition: int) -> dict:
    """This task's host, as the memory arithmetic needs it; ``error`` names a bad override variable.

    Memory and /dev/shm are what ``RAY_ON_SPARK_WORKER_*_BYTES`` say, when set, else detected.
    A bad value must not fail the task before the barrier's ``allGather`` (the other tasks would
    wait for it): it is reported with the outcomes instead.
    """
    info = {"partition": partition, "host": host_ip_towards(plan.head_host), "executor": executor_key(), "error": None}
    try:
        info.update(total_memory=host.worker_host_memory_bytes(), shm_bytes=host.worker_shm_bytes())
    except ValueError as e:
        info.update(total_memory=host.host_memory_bytes(), shm_bytes=host.shm_bytes(), error=str(e))
    return info


def slow_storage(plan: WorkerPlan) -> bool:
    """``RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE`` on the driver (passed on in the node env) or on this executor."""
    return host.slow_storage_allowed(plan.node_env) or host.slow_storage_allowed()


def launch_node(
    plan: WorkerPlan, partition: object, num_cpus: int, gpus: List[str], share: resources.MemoryShare,
    extra_resources: Optional[Dict[str, float]] = None,
) -> SupervisedProcess:
    """Start one supervised ``ray start`` for this task (a fresh private temp dir each time)."""
    temp_dir = tempfile.mkdtemp(prefix=f"ros-{plan.cluster_id}-w{partition}-", dir=plan.temp_root)
    # The supervisor fills in its own pid and create time (unknown until it runs), so
    # the driver can find and verify it through the node's labels.
    labels = {
        LABEL_CLUSTER: plan.cluster_id,
        LABEL_PARTITION: str(partition),
        LABEL_PID: "{supervisor_pid}",
        LABEL_CTIME: "{supervisor_ctime}",
    }
    # Ray makes its temp dir world-writable; keeping it inside our 0700 dir keeps it private.
    # Under a long ray_temp_root_dir Ray gets a short alias of it, for its sockets' sake.
    ray_temp = os.path.join(temp_dir, "r")
    alias = short_alias(ray_temp)
    node = ray_start.worker_command(
        head_address=plan.head_address,
        shape=ray_start.NodeShape(num_cpus, len(gpus), share.heap_bytes, share.object_store_bytes),
        temp_dir=alias or ray_temp, labels=labels,
        options=ray_start.merged_resources_option(plan.worker_options, extra_resources),
        head_wait_s=plan.start_timeout, head_on_this_host=host_ip_towards(plan.head_host) == plan.head_host,
        head_temp_dir=plan.head_temp_dir,
    )
    cmd = supervisor_command(
        node, log=os.path.join(temp_dir, "ray-start.log"), cleanup_dir=temp_dir, start_timeout=plan.start_timeout,
        watch=(plan.head_host, plan.head_port),
        collect_logs_to=collect_logs_path(plan.collect_log_dir, f"ray-worker-{plan.cluster_id}-p{partition}"),
        cleanup_links=[alias] if alias else [],
    )
    env = ray_start.node_env(auth_token=plan.auth_token, gpus=gpus, temp_dir=temp_dir, extra=plan.node_env)
    env.update(ray_start.worker_patience_env(plan.start_timeout))
    return SupervisedProcess(cmd, env)


def collect_logs_path(collect_dir: Optional[str], name: str) -> Optional[str]:
    """Where a node copies its logs at teardown (``collect_log_to_path/name``, plus ``-<pid>``), or None."""
    return os.path.join(collect_dir, name) if collect_dir else None


def run_worker_node(plan: WorkerPlan, _rows: Iterator, job: Optional[JobSlice] = None) -> Iterator[str]:
    """Barrier task body (see module docstring). Yields JSON status records.

    ``job``: which of the cluster's nodes this job runs (its first partition) and, for a healing
    job, what the nodes already running hold on each host.
    """
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    partition = (job.first if job is not None else 0) + ctx.partitionId()
    me = describe_host(plan, partition)
    infos = [json.loads(s) for s in ctx.allGather(json.dumps(me))]
    where = f"Ray worker node for Spark partition {partition} on {me['host']}"

    error: Optional[str] = None
    node: Optional[SupervisedProcess] = None
    try:
        if me["error"]:
            raise ValueError(me["error"])
        hosts = resources.hosts_summary(infos, plan.driver_host, plan.driver_host_reserved,
                                        job.held_by_host if job is not None else None)
        share = resources.worker_memory_share(
            hosts[me["host"]], plan.executor_footprint, plan.requested_heap, plan.requested_object_store,
            allow_slow_storage=slow_storage(plan),
        )
        if job is not None and job.shape is not None:
            share = resources.healing_share(share, job.shape)
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
    policy = RestartPolicy(plan.max_restarts, plan.restart_window_s)
    while True:
        rc = node.proc.wait()
        reason = node.rest()
        if rc in (EXIT_TERMINATED, EXIT_HEAD_LOST, EXIT_PARENT_LOST):  # the cluster is shutting down
            yield json.dumps({"partition": partition, "status": "stopped", "reason": reason})
            return
        now = time.monotonic()
        allowed = policy.allows(deaths, now)
        deaths = policy.recent(deaths, now) + [now]
        if not allowed:
            raise WorkerNodesStartError(
                f"{where} died {len(deaths)} times within {plan.restart_window_s:.0f}s; not restarting it again. "
                f"Last exit (supervisor code {rc}): {reason[-2000:]}"
            )
        logger.warning("%s died (supervisor code %s); restarting it in the same Spark task", where, rc)
        if not _wait_for_head(plan):  # after a partition Ray declared the node dead: back when the link is
            yield json.dumps({"partition": partition, "status": "stopped",
                              "reason": f"the Ray head stayed unreachable for {HEAD_UNREACHABLE_S:.0f}s"})
            return
        node = launch_node(plan, partition, num_cpus, gpus, share)
        restart_error = node.wait_ready(plan.start_timeout + 10)
        if restart_error:
            node.stop()
            raise WorkerNodesStartError(f"{where} died and could not be restarted: {restart_error}")


def _wait_for_head(plan: WorkerPlan) -> bool:
    """Whether the head answers (within :data:`HEAD_UNREACHABLE_S`); False once it refuses twice in a row.

    A node that died because the network to the head was down must not be restarted into the
    same silence (its ``ray start`` would give up and fail the task, and with it the barrier
    stage and every other node).
    """
    watch = HeadWatch(HEAD_UNREACHABLE_S, time.monotonic())
    while True:
        state = port_state(plan.head_host, plan.head_port)
        verdict = watch.observe(state, time.monotonic())
        if verdict is HeadVerdict.UP:
            return True
        if verdict is not HeadVerdict.WAITING:  # gone, or unreachable for too long
            return False
        # A refusal is confirmed at once: at shutdown the node's raylet often dies (its GCS is
        # gone) before the supervisor's own watch sees the head go, and the task lands here;
        # a second refusal 0.1 s later ends it. Silence is ridden out at a slower pace.
        time.sleep(0.1 if state == "refused" else 1.0)


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
        node = launch_node(plan, f"n{node_id}", num_cpus, gpus, share, {ray_start.NODE_ID_RESOURCE: float(node_id)})
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
