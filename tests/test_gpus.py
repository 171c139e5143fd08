"""GPUs: each Ray worker node gets exactly the GPU addresses Spark assigned to its task.

A second standalone cluster whose workers discover fake GPUs through Spark's
discovery-script mechanism (worker 0: "0","1"; worker 1: "2","3"); no GPU is needed.
"""

from __future__ import annotations

import pytest
import ray

import ray_on_spark


@pytest.fixture(scope="module")
def gpu_spark():
    from ray_on_spark.local_standalone import LocalStandaloneSpark, session_builder
    from ray_on_spark.spark_env import wait_for_slots

    cluster = LocalStandaloneSpark(num_workers=2, cores=1, memory="2g", gpus_per_worker=2).start()
    spark = (
        session_builder(cluster.master_url, "ray_on_spark-gpus")
        .config("spark.executor.resource.gpu.amount", "1")
        .config("spark.task.resource.gpu.amount", "1")
        .getOrCreate()
    )
    try:
        wait_for_slots(spark.sparkContext, 2, None, 60)
        yield spark
    finally:
        ray_on_spark.shutdown_ray_cluster()
        spark.stop()
        cluster.stop()


def test_each_node_gets_exactly_its_tasks_gpu_addresses(gpu_spark, no_ray_left):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    with ray_on_spark.ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1, num_gpus_worker_node=1) as cluster:
        nodes = cluster.worker_nodes()
        assert [n.resources.get("GPU") for n in nodes] == [1.0, 1.0]
        ray.init()

        @ray.remote(num_gpus=1)
        def visible():
            import os

            return [str(g) for g in ray.get_gpu_ids()], os.environ.get("CUDA_VISIBLE_DEVICES")

        got = ray.get([
            visible.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False)).remote()
            for n in nodes
        ])
        ids = [g[0] for g in got]
        assert all(len(i) == 1 for i in ids), got
        a, b = ids[0][0], ids[1][0]
        assert a != b, got  # disjoint: never a count guessed from the host
        # one address from each Spark worker's own set
        assert {a, b} & {"0", "1"} and {a, b} & {"2", "3"}, got
        assert all(cvd == i[0] for i, (_, cvd) in zip(ids, got)), got
