"""Ray on Spark with Spark's local masters: local[N] and local-cluster[N,cores,MB]."""

from __future__ import annotations

import pytest
import ray

import ray_on_spark
from helpers import active_spark_jobs


@pytest.mark.parametrize("master", ["local[2]", "local-cluster[2,1,1024]"])
def test_setup_runs_tasks_and_shuts_down_on_local_masters(master, no_ray_left):
    from ray_on_spark.local_standalone import session_builder
    from ray_on_spark.spark_env import wait_for_slots

    spark = session_builder(master, f"ray_on_spark-{master}").getOrCreate()
    try:
        wait_for_slots(spark.sparkContext, 2, None, 60)
        with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
            assert len(cluster.worker_nodes()) == 2
            ray.init()
            assert ray.cluster_resources()["CPU"] == 2.0
            nodes = set(ray.get([ray.remote(lambda: ray.get_runtime_context().get_node_id()).remote() for _ in range(8)]))
            assert nodes <= {n.node_id for n in cluster.worker_nodes()}
        assert active_spark_jobs(spark.sparkContext) == []
    finally:
        spark.stop()
