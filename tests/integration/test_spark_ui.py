"""What a Spark user sees in the Spark UI: the long-running job says which Ray cluster it is and how to reach it,
and a conversion's job says what it converts. Read from Spark's own status store (the UI's data)."""

from __future__ import annotations

from typing import List

import pytest
import ray

import ray_on_spark

pytestmark = pytest.mark.any_spark  # the texts the Spark UI shows for our jobs


def _job_descriptions(sc) -> List[str]:
    jobs = sc._jsc.sc().statusStore().jobsList(None)  # every job of the application, as the UI lists them (a Seq)
    out = []
    for i in range(jobs.size()):
        description = jobs.apply(i).description()
        if description.isDefined():
            out.append(description.get())
    return out


def test_the_barrier_job_and_from_spark_jobs_say_what_they_are(spark, no_ray_left):
    # One node: the conversion's job needs the other Spark slot.
    with ray_on_spark.ray_cluster(max_worker_nodes=1) as cluster:
        ray.init()
        ds = ray_on_spark.from_spark(spark.range(0, 1000, numPartitions=2).selectExpr("id", "id * 2 AS twice"))
        assert ds.count() == 1000
        descriptions = _job_descriptions(spark.sparkContext)
        barrier = [d for d in descriptions if d.startswith(f"Ray cluster {cluster.cluster_id} (ray_on_spark)")]
        assert barrier, descriptions
        assert cluster.address in barrier[0] and cluster.dashboard_url in barrier[0]
        assert "1 worker node(s)" in barrier[0]
        assert any(d.startswith("from_spark: 2 column(s), ") for d in descriptions), descriptions
        ray.shutdown()
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None  # put back as it was
