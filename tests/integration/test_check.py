"""check_distribution() on a real cluster: both worker nodes run tasks and host an actor, and the Spark job
ran on the executors -- what a user runs by hand to see that every node is used."""

from __future__ import annotations

import pytest
import ray

import ray_on_spark

pytestmark = pytest.mark.any_spark  # check_distribution's report; the Ray-on-Spark tests run on both


def test_check_distribution_sees_every_node_and_says_why_spark_could_not_run(spark, no_ray_left):
    with ray_on_spark.ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1):
        ray.init()
        try:
            report = ray_on_spark.check_distribution(spark_timeout=3)
        finally:
            ray.shutdown()
    workers = [n for n in report.nodes if not n.is_head]
    assert len(workers) == 2 and all(n.tasks > 0 and n.actor for n in workers), report.format()
    assert report.ok and "every node is used" in report.format()
    assert report.spark_tasks_per_host == {} and "got no slot within 3s" in report.spark_note  # both slots hold nodes


def test_check_distribution_runs_a_spark_job_on_a_free_slot(spark, no_ray_left):
    with ray_on_spark.ray_cluster(max_worker_nodes=1, num_cpus_worker_node=1):
        ray.init()
        try:
            report = ray_on_spark.check_distribution()
        finally:
            ray.shutdown()
    assert report.ok and len([n for n in report.nodes if not n.is_head]) == 1
    assert sum(report.spark_tasks_per_host.values()) >= 1 and not report.spark_note, report.format()


def test_check_distribution_needs_a_connected_ray():
    import pytest

    from ray_on_spark.errors import RayNotConnectedError

    assert not ray.is_initialized()
    with pytest.raises(RayNotConnectedError, match="ray.init"):
        ray_on_spark.check_distribution()
