"""Autoscaling on the real standalone cluster: Ray's autoscaler adds worker nodes (Spark
tasks) under load and removes idle ones, freeing the Spark slots for other Spark work.

The load is two 1-CPU tasks that wait at a gate until both run at once, which needs two
1-CPU worker nodes at the same time (the head has no CPUs).
"""

from __future__ import annotations

import os
import time

import pytest

import ray_on_spark
from helpers import ray_processes, wait_no_new_ray_processes


def _wait(probe, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _our_active_groups(sc, cluster_id: str) -> set:
    """The autoscaled nodes' Spark job groups with a job still running (each holds one Spark slot)."""
    from ray_on_spark.spark_env import job_group_running

    return {g for g in (f"ray_on_spark-{cluster_id}-n{i}" for i in range(1, 20)) if job_group_running(sc, g)}


# Ray-level (the autoscaler and our node provider); the min_worker_nodes test below covers
# autoscaling on both pyspark lines.
@pytest.mark.any_spark
def test_autoscaling_goes_0_to_2_under_load_and_back_to_0_when_idle(spark, tmp_path):
    import ray

    sc = spark.sparkContext
    before = ray_processes()
    t_setup = time.monotonic()
    with ray_on_spark.ray_cluster(max_worker_nodes=2, min_worker_nodes=0, autoscale_idle_timeout_minutes=0.1,
                                  autoscale_upscaling_speed=1.0) as cluster:
        print(f"autoscaling cluster up in {time.monotonic() - t_setup:.1f}s")
        assert cluster.worker_nodes() == []  # min_worker_nodes=0: only the head
        assert not _our_active_groups(sc, cluster.cluster_id)  # no Spark slot held
        ray.init()

        @ray.remote(num_cpus=0)
        class Gate:
            def __init__(self):
                self.arrived, self.open = [], False

            def arrive(self, node_id):
                self.arrived.append(node_id)

            def count(self):
                return len(self.arrived)

            def nodes(self):
                return list(self.arrived)

        # The task must never block in ray.get: Ray lends a blocked task's CPU to another task,
        # which then ran on the same 1-CPU node (the cause of this test's old flake: both tasks
        # "at the gate" on one node). It reports without waiting and waits on a file instead.
        release = str(tmp_path / "release")

        @ray.remote(num_cpus=1)
        def work(gate, release):
            gate.arrive.remote(ray.get_runtime_context().get_node_id())
            while not os.path.exists(release):
                time.sleep(0.1)
            return ray.get_runtime_context().get_node_id()

        gate = Gate.remote()
        t0 = time.monotonic()
        refs = [work.remote(gate, release) for _ in range(2)]
        _wait(lambda: ray.get(gate.count.remote()) == 2, 180, "two worker nodes running the two tasks at once")  # noqa: F821 (deleted only after this wait)
        up_s = time.monotonic() - t0
        assert len(cluster.worker_nodes()) == 2
        assert len(_our_active_groups(sc, cluster.cluster_id)) == 2  # one Spark job per node
        # The two tasks held their CPUs at the same time on two different 1-CPU worker nodes.
        arrivals = ray.get(gate.nodes.remote())
        assert len(set(arrivals)) == 2, arrivals
        open(release, "w").close()
        assert sorted(ray.get(refs)) == sorted(arrivals)
        del gate

        t1 = time.monotonic()
        _wait(lambda: not cluster.worker_nodes() and not _our_active_groups(sc, cluster.cluster_id), 180,
              "the idle worker nodes to be removed and their Spark jobs to end")
        down_s = time.monotonic() - t1
        print(f"0->2 nodes under load in {up_s:.1f}s; 2->0 after idling in {down_s:.1f}s (idle timeout 6 s)")

        # The freed slots are Spark's again: a barrier job needs both at once.
        assert sc.parallelize(range(2), 2).barrier().mapPartitions(lambda it: [1]).sum() == 2
        ray.shutdown()
    left = wait_no_new_ray_processes(before)
    assert not left, sorted(left)


def test_autoscaling_setup_starts_min_worker_nodes_each_in_a_one_task_job(spark):
    sc = spark.sparkContext
    before = ray_processes()
    with ray_on_spark.ray_cluster(max_worker_nodes=2, min_worker_nodes=1) as cluster:
        nodes = cluster.worker_nodes()
        assert len(nodes) == 1 and nodes[0].labels["ray-on-spark-partition"].startswith("n"), nodes
        assert len(_our_active_groups(sc, cluster.cluster_id)) == 1  # one Spark slot held, the other free
        assert cluster.status()["expected_worker_nodes"] == 1 and not cluster.status()["degraded"]
    left = wait_no_new_ray_processes(before)
    assert not left, sorted(left)
