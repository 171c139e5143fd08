"""Wrong calls are refused before anything starts, naming the argument and a value that works.

These checks run before Spark is consulted, so no SparkSession is needed here; the
Spark-dependent refusals (too many nodes for the slots, setup twice) are in the
standalone tests.
"""

from __future__ import annotations

import time

import pytest

import ray_on_spark
from helpers import ray_processes

CASES = [
    (dict(max_worker_nodes=0), "max_worker_nodes=0"),
    (dict(max_worker_nodes=-3), "max_worker_nodes=-3"),
    (dict(max_worker_nodes="2"), "max_worker_nodes='2'"),
    (dict(max_worker_nodes=True), "max_worker_nodes=True"),
    (dict(max_worker_nodes=2, min_worker_nodes=3), "min_worker_nodes=3 is more than max_worker_nodes=2"),
    (dict(max_worker_nodes=2, min_worker_nodes=-1), "min_worker_nodes=-1"),
    (dict(max_worker_nodes=2, min_worker_nodes=0, autoscale_upscaling_speed=0), "autoscale_upscaling_speed=0 must"),
    (dict(max_worker_nodes=2, min_worker_nodes=0, autoscale_idle_timeout_minutes=-1),
     "autoscale_idle_timeout_minutes=-1 must"),
    (dict(max_worker_nodes=2, autoscale_idle_timeout_minutes="soon"), "autoscale_idle_timeout_minutes='soon'"),
    (dict(max_worker_nodes=2, num_cpus_worker_node=0), "num_cpus_worker_node=0"),
    (dict(max_worker_nodes=2, num_gpus_worker_node=-1), "num_gpus_worker_node=-1"),
    (dict(max_worker_nodes=2, num_gpus_head_node=-1), "num_gpus_head_node=-1"),
    (dict(max_worker_nodes=2, memory_worker_node="lots"), "memory_worker_node='lots'"),
    (dict(max_worker_nodes=2, memory_worker_node=10**15), "memory_worker_node=1000000000000000"),
    (dict(max_worker_nodes=2, collect_log_to_path="/proc/no"), "collect_log_to_path='/proc/no' is not writable"),
    (dict(max_worker_nodes=2, head_node_options={"port": 1234}), "head_node_options has key 'port'"),
    (dict(max_worker_nodes=2, worker_node_options={"num_cpus": 4}), "num_cpus_worker_node"),
    (dict(max_worker_nodes=2, worker_node_options={"--object-store-memory": 1}), "object_store_memory"),
    (dict(max_worker_nodes=2, worker_node_options={"no_such_option": 1}), "not a `ray start` option"),
    (dict(max_worker_nodes=2, ray_temp_root_dir="/proc/nope"), "ray_temp_root_dir='/proc/nope' is not writable"),
    (dict(max_worker_nodes=2, strict_mode="yes"), "strict_mode='yes'"),
    (dict(max_worker_nodes=2, num_worker_nodes=2), "num_worker_nodes"),
]


@pytest.mark.parametrize("kwargs,expected", CASES, ids=[c[1][:40] for c in CASES])
def test_bad_argument_is_refused_at_once_and_starts_nothing(kwargs, expected):
    import ray  # noqa: F401  (imported before timing: the first import of Ray alone takes a second)

    before = ray_processes()
    t0 = time.monotonic()
    with pytest.raises((ValueError, TypeError)) as err:
        ray_on_spark.setup_ray_cluster(**kwargs)
    assert time.monotonic() - t0 < 1.0
    assert expected in str(err.value)
    assert ray_processes() == before
    assert ray_on_spark.active_cluster() is None


def test_unknown_keyword_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="bogus"):
        ray_on_spark.setup_ray_cluster(max_worker_nodes=1, bogus=1)


def test_deprecated_alias_is_accepted_with_a_warning_but_still_validated():
    with pytest.warns(DeprecationWarning, match="num_cpus_worker_node"):
        with pytest.raises(ValueError, match="num_cpus_worker_node=0"):
            ray_on_spark.setup_ray_cluster(max_worker_nodes=1, num_cpus_per_node=0)


def test_no_active_spark_session_is_refused_with_how_to_get_one():
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        pytest.skip("a SparkSession is active in this process")
    with pytest.raises(RuntimeError, match="No active SparkSession"):
        ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
