"""What the library needs to know about the running Spark application.

Thin wrappers over SparkContext / its JVM side, kept in one place so the rest of the
code reads as plain Python values.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import List, Optional

from ray_on_spark.resources import executor_footprint_bytes, parse_memory

logger = logging.getLogger(__name__)


class NoSparkSessionError(RuntimeError):
    pass


def active_spark():
    """The active SparkSession, or a clear error saying how to get one."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise NoSparkSessionError(
            "No active SparkSession: create one first, e.g. "
            "`SparkSession.builder.master('spark://127.0.0.1:7077').getOrCreate()` "
            "(on Databricks the notebook's `spark` is used automatically)."
        )
    return spark


def master_kind(master: str) -> str:
    """'standalone', 'local-cluster', 'local', 'yarn', or 'unsupported'."""
    if master.startswith("spark://"):
        return "standalone"
    if master.startswith("local-cluster["):
        return "local-cluster"
    if master == "local" or master.startswith("local["):
        return "local"
    if master == "yarn":
        return "yarn"
    return "unsupported"


def conf_get(sc, key: str, default: Optional[str] = None) -> Optional[str]:
    return sc.getConf().get(key, default)


def task_cpus(sc) -> int:
    return int(conf_get(sc, "spark.task.cpus", "1"))


def task_gpus(sc) -> float:
    return float(conf_get(sc, "spark.task.resource.gpu.amount", "0"))


def executor_footprint(sc) -> int:
    """Host memory one executor of this application takes (heap + overhead + pyspark)."""
    heap = parse_memory(conf_get(sc, "spark.executor.memory", "1g"), name="spark.executor.memory", default_unit="m")
    overhead_s = conf_get(sc, "spark.executor.memoryOverhead")
    overhead = parse_memory(overhead_s, default_unit="m") if overhead_s else None
    factor = float(conf_get(sc, "spark.executor.memoryOverheadFactor", "0.1"))
    py_s = conf_get(sc, "spark.executor.pyspark.memory")
    py = parse_memory(py_s, default_unit="m") if py_s else 0
    return executor_footprint_bytes(heap, overhead, factor, py)


def driver_memory(sc) -> int:
    return parse_memory(conf_get(sc, "spark.driver.memory", "1g"), name="spark.driver.memory", default_unit="m")


def driver_host(sc) -> str:
    """The driver's address as executors see it (where the Ray head will listen)."""
    host = conf_get(sc, "spark.driver.host") or socket.gethostname()
    return socket.gethostbyname(host)


def driver_gpu_addresses(sc) -> List[str]:
    """GPU addresses Spark assigned to the driver (spark.driver.resource.gpu.*), in order."""
    info = (sc.resources or {}).get("gpu")
    return list(info.addresses) if info is not None else []


def dynamic_allocation(sc) -> bool:
    return (conf_get(sc, "spark.dynamicAllocation.enabled", "false") or "false").lower() == "true"


def task_resource_profile(num_cpus: int, num_gpus: int):
    """A stage-level TaskResourceProfile asking ``num_cpus`` (and GPUs) per task."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    req = TaskResourceRequests().cpus(num_cpus)
    if num_gpus > 0:
        req = req.resource("gpu", num_gpus)
    return ResourceProfileBuilder().require(req).build


def max_concurrent_tasks(sc, profile=None) -> int:
    """How many tasks of ``profile`` the registered executors can run at once."""
    jsc = sc._jsc.sc()
    if profile is None:
        jprofile = jsc.resourceProfileManager().defaultResourceProfile()
    else:
        jprofile = profile._java_resource_profile
        if jprofile is None:  # built before the SparkContext existed
            jprofile = jsc.resourceProfileManager().defaultResourceProfile()
        else:
            # Spark only knows a profile once an RDD uses it; counting slots needs it registered.
            jsc.resourceProfileManager().addResourceProfile(jprofile)
    return int(jsc.maxNumConcurrentTasks(jprofile))


def wait_for_slots(sc, needed: int, profile, timeout: float) -> int:
    """Wait until executors offer ``needed`` concurrent task slots; return what they offer.

    Executors register with the driver some seconds after the SparkSession starts;
    a barrier job submitted before that is rejected by Spark (and retried for minutes).
    """
    deadline = time.monotonic() + timeout
    while True:
        have = max_concurrent_tasks(sc, profile)
        if have >= needed or time.monotonic() >= deadline:
            return have
        time.sleep(0.2)


def executor_count(sc) -> int:
    """Executors registered right now (the driver excluded)."""
    infos = sc.statusTracker().getExecutorInfos()
    return max(0, len(infos) - 1)


def job_group_running(sc, group: str) -> bool:
    """True while a job of the group has been submitted and has not ended.

    Job status, unlike a stage's task counts, is never stale: Spark's status store may
    skip writing a task start that follows its stage's start within
    ``spark.ui.liveUpdate.period``, and an idle application never flushes it.
    """
    tracker = sc.statusTracker()
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is not None and job.status == "RUNNING":
            return True
    return False


def job_has_active_tasks(sc, group: str) -> bool:
    """True while any stage of the job group still has running tasks."""
    tracker = sc.statusTracker()
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        for stage_id in job.stageIds:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None and stage.numActiveTasks > 0:
                return True
    return False
