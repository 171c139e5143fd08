"""GPUs: each Ray worker node gets exactly the GPU addresses Spark assigned to its task.

A separate driver process (GPU settings given to a SparkSession become JVM-wide
properties of pyspark's gateway, so they must not leak into the other tests) starts a
standalone cluster whose workers discover fake GPUs through Spark's discovery-script
mechanism (worker 0: "0","1"; worker 1: "2","3"), and a driver that discovers "7","8"
(spark.driver.resource.gpu.*) for the head node. No GPU is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import ray_processes, wait_no_new_ray_processes

DRIVER = r"""
import json, os, ray, ray_on_spark
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder
from ray_on_spark.spark_env import wait_for_slots

with LocalStandaloneSpark(num_workers=2, cores=1, memory="2g", gpus_per_worker=2) as cluster:
    spark = (session_builder(cluster.master_url, "ray_on_spark-gpus")
             .config("spark.executor.resource.gpu.amount", "1")
             .config("spark.task.resource.gpu.amount", "1")
             .config("spark.driver.resource.gpu.amount", "2")
             .config("spark.driver.resource.gpu.discoveryScript", os.environ["DRIVER_GPU_SCRIPT"]).getOrCreate())
    try:
        wait_for_slots(spark.sparkContext, 2, None, 60)
        try:
            ray_on_spark.setup_ray_cluster(max_worker_nodes=2, num_gpus_head_node=3)
        except ValueError as e:
            print("REFUSED " + json.dumps(str(e)), flush=True)
        with ray_on_spark.ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1, num_gpus_worker_node=1,
                                      num_gpus_head_node=1) as rc:
            nodes = rc.worker_nodes()
            ray.init()
            head = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("node:__internal_head__")][0]

            @ray.remote(num_gpus=1)
            def visible():
                return [str(g) for g in ray.get_gpu_ids()], os.environ.get("CUDA_VISIBLE_DEVICES")

            got = ray.get([visible.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
                           for n in nodes])
            on_head = ray.get(visible.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote())
            print("RESULT " + json.dumps({"node_gpus": [n.resources.get("GPU") for n in nodes], "tasks": got,
                                          "head": on_head}), flush=True)
    finally:
        spark.stop()
"""


def test_each_node_gets_exactly_its_tasks_gpu_addresses(tmp_path):
    before = ray_processes()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYSPARK_PYTHON"] = sys.executable
    script = tmp_path / "driver-gpus.sh"
    script.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["7", "8"]}\'\n')
    script.chmod(0o755)
    env["DRIVER_GPU_SCRIPT"] = str(script)
    proc = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    assert result["node_gpus"] == [1.0, 1.0]
    (ids_a, cvd_a), (ids_b, cvd_b) = result["tasks"]
    assert len(ids_a) == 1 and len(ids_b) == 1, result
    a, b = ids_a[0], ids_b[0]
    assert a != b, result  # disjoint: never a count guessed from the host
    assert {a, b} & {"0", "1"} and {a, b} & {"2", "3"}, result  # one from each Spark worker's own set
    assert (cvd_a, cvd_b) == (a, b), result  # CUDA_VISIBLE_DEVICES is exactly the task's address
    # num_gpus_head_node=1: the head gets the first of the driver's own addresses, nothing else
    assert result["head"] == [["7"], "7"], result
    refused = json.loads([x for x in proc.stdout.splitlines() if x.startswith("REFUSED ")][-1][len("REFUSED "):])
    assert "num_gpus_head_node=3" in refused and "spark.driver.resource.gpu.amount" in refused, refused
    assert not wait_no_new_ray_processes(before)
