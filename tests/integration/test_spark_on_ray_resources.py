"""Spark on Ray: what each executor's actor reserves in Ray -- GPUs, custom resources, fractional CPUs.

A separate driver process (GPU confs given to a SparkSession become JVM-wide properties of
pyspark's gateway, so they must not leak into the other tests) starts a local Ray whose one
node has two fake GPUs (``ray.init(num_gpus=2)``, as ``ray start --num-gpus 2`` does; no GPU is
needed) and a custom resource, then ``init_spark`` with RayDP's
``spark.ray.raydp_spark_executor.actor.resource.*`` confs and Spark's
``spark.executor.resource.gpu.amount``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ray_processes, wait_no_new_ray_processes

DRIVER = r"""
import json, os, ray, ray_on_spark
from pyspark import TaskContext

ray.init(num_cpus=3, num_gpus=2, resources={"accel": 4}, object_store_memory=300 * 2**20,
         include_dashboard=False, log_to_driver=False)
before = ray.available_resources()
spark = ray_on_spark.init_spark("gpus", 2, 1, "600MB", configs={
    "spark.executor.resource.gpu.amount": "1", "spark.task.resource.gpu.amount": "1",
    "spark.ray.raydp_spark_executor.actor.resource.accel": "2",
    "spark.ray.raydp_spark_executor.actor.resource.cpu": "0.5"})
during = ray.available_resources()

def seen(_):
    ctx = TaskContext.get()
    yield (ctx.resources()["gpu"].addresses, os.environ.get("CUDA_VISIBLE_DEVICES"))

tasks = spark.sparkContext.parallelize(range(2), 2).mapPartitions(seen).collect()
ray_on_spark.stop_spark()
after = ray.available_resources()
print("RESULT " + json.dumps({"before": before, "during": during, "after": after, "tasks": tasks}), flush=True)
ray.shutdown()
"""


def test_executor_actors_reserve_gpus_custom_resources_and_fractional_cpus_and_see_their_gpu_ids():
    baseline = ray_processes()
    out = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stderr[-4000:]
    r = json.loads(lines[-1][len("RESULT "):])
    before, during, after = r["before"], r["during"], r["after"]
    # reserved while Spark is up: 2 x (0.5 CPU, 1 GPU, 2 accel)
    assert before["CPU"] - during.get("CPU", 0) == 1.0
    assert during.get("GPU", 0) == 0 and before["accel"] - during.get("accel", 0) == 4
    # each task's Spark GPU addresses are its executor's Ray GPU ids, which CUDA_VISIBLE_DEVICES holds
    addresses = sorted(tuple(a) for a, _ in r["tasks"])
    assert addresses == [("0",), ("1",)], r["tasks"]
    assert all(",".join(a) == cuda for a, cuda in r["tasks"]), r["tasks"]
    # given back at stop
    assert (after["CPU"], after["GPU"], after["accel"]) == (before["CPU"], before["GPU"], before["accel"])
    assert not wait_no_new_ray_processes(baseline)
