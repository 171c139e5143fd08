"""What setup does for an autoscaling cluster, before the head starts.

1. A short barrier probe, one task per Spark slot, reads each host's memory and executors
   (the facts the barrier job gathers), so every node gets the one shape that fits the
   fullest host (:func:`~ray_on_spark.on_spark.autoscaling.launcher.autoscaled_share`).
2. The driver's :class:`~ray_on_spark.on_spark.autoscaling.launcher.NodeLauncher` starts:
   it turns the autoscaler's create/terminate into one-task Spark jobs.
3. Ray's autoscaler config, naming our node provider and the launcher, is written to the
   cluster's private dir for ``ray start --head --autoscaling-config``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple

from ray_on_spark import spark_env
from ray_on_spark.on_spark.autoscaling.launcher import NodeLauncher, autoscaled_share, autoscaler_config
from ray_on_spark.on_spark.plan import ClusterPlan, WorkerPlan
from ray_on_spark.on_spark.ray_start import NODE_ID_RESOURCE
from ray_on_spark.on_spark.resources import MemoryShare, hosts_summary
from ray_on_spark.on_spark.worker_task import describe_hosts_task, run_autoscaled_node, slow_storage

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


def start_autoscaling(
    spark: "SparkSession", plan: ClusterPlan, worker_plan: WorkerPlan, cluster_id: str, temp_dir: str,
    spark_ui_label: str, on_job_group: Optional[Callable[[str], None]] = None,
) -> Tuple[NodeLauncher, str, MemoryShare]:
    """Size the nodes, start the launcher, write the config; returns (launcher, config path, node shape).

    ``spark_ui_label`` names the cluster in each node job's description (the Spark UI shows it);
    ``on_job_group`` is told each node job's group as it is submitted (the start hook's moment).
    """
    sc = spark.sparkContext
    profile = (spark_env.task_resource_profile(plan.num_cpus_worker_node, plan.num_gpus_worker_node)
               if plan.use_task_profile else None)
    slots = max(1, spark_env.max_concurrent_tasks(sc, profile))

    def probe(rows: Iterator) -> Iterator[str]:
        return describe_hosts_task(worker_plan, rows)

    rdd = sc.parallelize(range(slots), slots).barrier().mapPartitions(probe)
    if profile is not None:
        rdd = rdd.withResources(profile)
    infos = [json.loads(x) for x in rdd.collect()]
    bad = [i["error"] for i in infos if i.get("error")]
    if bad:
        raise ValueError(bad[0])
    hosts = hosts_summary(infos, worker_plan.driver_host, worker_plan.driver_host_reserved)
    share = autoscaled_share(hosts, plan.num_worker_nodes, worker_plan.executor_footprint,
                             worker_plan.requested_heap, worker_plan.requested_object_store,
                             allow_slow_storage=slow_storage(worker_plan))

    def task(rows: Iterator) -> Iterator[str]:
        return run_autoscaled_node(worker_plan, share, rows)

    def submit(node_id: str, group: str) -> List[str]:
        sc.setJobGroup(group, f"{spark_ui_label}: autoscaled worker node {node_id}", True)
        if on_job_group is not None:
            on_job_group(group)
        node_rdd = sc.parallelize([node_id], 1).mapPartitions(task)
        if profile is not None:
            node_rdd = node_rdd.withResources(profile)
        return node_rdd.collect()

    launcher = NodeLauncher(
        cluster_id, temp_dir, submit,
        cancel=sc.cancelJobGroup,
        is_task_running=lambda group: spark_env.job_group_running(sc, group),
    )
    try:
        path = _write_config(plan, share, launcher, cluster_id, temp_dir)
    except BaseException:
        launcher.close()  # the cluster never saw it: nobody else would stop its server
        raise
    logger.info("autoscaling %d..%d worker nodes of %s heap + %s object store each",
                plan.min_worker_nodes, plan.num_worker_nodes, share.heap_bytes, share.object_store_bytes)
    return launcher, path, share


def _write_config(plan: ClusterPlan, share: MemoryShare, launcher: NodeLauncher, cluster_id: str, temp_dir: str) -> str:
    """Ray's autoscaler config for this cluster, written to its private dir; the path."""
    h = plan.head
    config = autoscaler_config(
        cluster_id=cluster_id,
        head_resources={"CPU": h.num_cpus, "GPU": h.num_gpus, "memory": h.memory.heap_bytes,
                        "object_store_memory": h.memory.object_store_bytes, NODE_ID_RESOURCE: 0},
        worker_resources={"CPU": plan.num_cpus_worker_node, "GPU": plan.num_gpus_worker_node,
                          "memory": share.heap_bytes, "object_store_memory": share.object_store_bytes},
        min_workers=plan.min_worker_nodes or 0,
        max_workers=plan.num_worker_nodes,
        upscaling_speed=plan.upscaling_speed,
        idle_timeout_minutes=plan.idle_timeout_minutes,
        launcher_url=launcher.url,
        secret_path=launcher.secret_path,
    )
    path = os.path.join(temp_dir, "autoscaler.json")
    with open(path, "w") as f:
        json.dump(config, f)
    return path
