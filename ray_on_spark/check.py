"""The distribution check: is every node of the cluster really used?

What users of a Ray-on-Spark (or Spark-on-Ray) deployment run by hand on day one: some
CPU tasks spread over the cluster, one actor pinned to each node, and -- when this process
has a SparkSession -- a Spark job with a task per slot; then a count of what ran where.
``check_distribution()`` returns a :class:`DistributionReport`; ``python -m ray_on_spark
check`` prints it.
"""

from __future__ import annotations

import collections
import logging
import socket
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ray_on_spark import spark_env
from ray_on_spark.errors import RayNotConnectedError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


@dataclass
class NodeUse:
    """What ran on one Ray node during the check."""

    node_id: str
    address: str
    is_head: bool
    cpus: float
    tasks: int = 0
    actor: bool = False  # an actor pinned to the node started and answered
    actor_error: str = ""


@dataclass
class DistributionReport:
    """Per node: tasks and the pinned actor; per Spark executor host: Spark tasks (if a SparkSession was up)."""

    nodes: List[NodeUse]
    spark_tasks_per_host: Dict[str, int] = field(default_factory=dict)
    #: Why the Spark part did not run, when it did not (e.g. every slot holds a Ray worker node).
    spark_note: str = ""

    @property
    def unused_nodes(self) -> List[NodeUse]:
        """Nodes with CPUs that ran no task, or could not host an actor."""
        return [n for n in self.nodes if (n.cpus > 0 and n.tasks == 0) or not n.actor]

    @property
    def ok(self) -> bool:
        return not self.unused_nodes

    def to_dict(self) -> dict:
        return {"ok": self.ok, "nodes": [asdict(n) for n in self.nodes],
                "spark_tasks_per_host": dict(self.spark_tasks_per_host), "spark_note": self.spark_note}

    def format(self) -> str:
        """A table a person reads in a terminal or a notebook cell."""
        lines = [f"{'node':14} {'address':16} {'kind':6} {'CPUs':>5} {'tasks':>6} actor"]
        for n in self.nodes:
            actor = "ok" if n.actor else f"FAILED: {n.actor_error[:80]}"
            lines.append(f"{n.node_id[:12]:14} {n.address:16} {'head' if n.is_head else 'worker':6} "
                         f"{n.cpus:>5g} {n.tasks:>6} {actor}")
        if self.spark_tasks_per_host:
            lines.append("Spark tasks per executor host: " + ", ".join(
                f"{host}: {count}" for host, count in sorted(self.spark_tasks_per_host.items())))
        if self.spark_note:
            lines.append(f"Spark: {self.spark_note}")
        unused = self.unused_nodes
        lines.append("every node is used" if not unused else
                     f"NOT USED: {', '.join(n.node_id[:12] for n in unused)} (see the rows above)")
        return "\n".join(lines)


def check_distribution(spark: Optional["SparkSession"] = None, tasks_per_cpu: int = 2,
                       timeout: float = 120.0, spark_timeout: float = 30.0) -> DistributionReport:
    """Run CPU tasks over the cluster, one actor on each node and (with a SparkSession) a Spark job.

    Needs this process connected to Ray (``ray.init()``). ``spark`` defaults to the active
    SparkSession, if there is one; without one the Spark part is skipped. Each task holds
    a CPU for a moment, so the tasks spread over every node with CPUs, as real work would.
    The Spark job gets ``spark_timeout`` seconds: when Ray worker nodes hold every Spark slot
    it cannot run, and is cancelled and reported instead of waiting for ever.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise RayNotConnectedError("check_distribution() needs a connected Ray: call ray.init() first.")
    alive = [n for n in ray.nodes() if n.get("Alive")]
    nodes = {n["NodeID"]: NodeUse(node_id=n["NodeID"], address=n["NodeManagerAddress"],
                                  is_head="node:__internal_head__" in n.get("Resources", {}),
                                  cpus=float(n.get("Resources", {}).get("CPU", 0))) for n in alive}

    @ray.remote(num_cpus=1)
    def cpu_task(seconds: float) -> str:
        import time

        time.sleep(seconds)  # hold the CPU, so that the next task goes to another free one
        return ray.get_runtime_context().get_node_id()

    @ray.remote(num_cpus=0)
    class Probe:
        def where(self) -> str:
            return ray.get_runtime_context().get_node_id()

    total_cpus = int(sum(n.cpus for n in nodes.values()))
    refs = [cpu_task.remote(0.2) for _ in range(max(1, total_cpus * tasks_per_cpu))]
    for node_id in ray.get(refs, timeout=timeout):
        if node_id in nodes:
            nodes[node_id].tasks += 1
    actors = {node_id: Probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
              for node_id in nodes}
    for node_id, actor in actors.items():
        try:
            nodes[node_id].actor = ray.get(actor.where.remote(), timeout=timeout) == node_id
        except Exception as e:  # the node could not host it: that is what the check is for
            nodes[node_id].actor_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        finally:
            ray.kill(actor)
    report = DistributionReport(sorted(nodes.values(), key=lambda n: (not n.is_head, n.address, n.node_id)))
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.getActiveSession()
    if spark is not None:
        report.spark_tasks_per_host, report.spark_note = _spark_tasks_per_host(spark, spark_timeout)
    logger.info("distribution check:\n%s", report.format())
    return report


def _spark_tasks_per_host(spark: "SparkSession", timeout: float) -> Tuple[Dict[str, int], str]:
    """A Spark job with a task per slot of the application: where did they run? (or why it could not run)."""
    import uuid

    sc = spark.sparkContext
    n = max(1, sc.defaultParallelism)
    group = f"ray_on_spark-check-{uuid.uuid4().hex[:8]}"
    result: List[Dict[str, int]] = []
    errors: List[BaseException] = []

    def run() -> None:
        try:
            sc.setJobGroup(group, "ray_on_spark distribution check", True)
            hosts = sc.parallelize(range(n), n).map(lambda _: socket.gethostname()).collect()
            result.append(dict(collections.Counter(hosts)))
        except BaseException as e:  # cancelled at the deadline, or a failed job: reported below
            errors.append(e)

    thread = spark_env.spark_thread(run, group)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        sc.cancelJobGroup(group)
        thread.join(30)
        return {}, (f"the check's Spark job got no slot within {timeout:.0f}s: every slot of this application is "
                    "busy (Ray worker nodes hold theirs for the cluster's life); leave one free to check Spark too")
    if errors:
        return {}, f"the check's Spark job failed: {str(errors[0]).splitlines()[0][:300]}"
    return result[0], ""
