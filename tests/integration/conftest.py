"""Fixtures: a real Spark standalone cluster on 127.0.0.1 (master + 2 workers, 1 core and
2 GiB each) for the whole session, and a SparkSession on it."""

from __future__ import annotations

import logging
import os

import pytest

logging.getLogger("ray_on_spark").setLevel(logging.INFO)

# Class-data archives (ray_on_spark.on_ray.cds) are built in the background after a host's first
# Spark-on-Ray session; on 2 cores that build would slow the tests that run meanwhile.
# tests/integration/test_cds.py turns them on, with a cache dir of its own, and checks them.
os.environ["RAY_ON_SPARK_CDS"] = "0"


_CLUSTERS: list = []  # the session's standalone cluster, for the failure report below


@pytest.fixture(scope="session")
def standalone():
    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark

    cluster = LocalStandaloneSpark(num_workers=2, cores=1, memory="2g").start()
    _CLUSTERS.append(cluster)
    yield cluster
    _CLUSTERS.remove(cluster)
    cluster.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the tail of every executor log of the shared standalone
    cluster that shows an executor dying (an OOM: exit code 52): the work dirs are removed at
    the session's end, so CI output is the only place that evidence survives."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _CLUSTERS:
        deaths = _CLUSTERS[0].executor_deaths()
        if deaths:
            report.sections.append(("executors that died", deaths[-12000:]))


@pytest.fixture(scope="module")
def spark(standalone):
    """A SparkSession on the standalone cluster, with both executors registered."""
    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import session_builder

    # The fixture itself waits for both executors, so the library need not wait for
    # late registrations (Spark's 30 s default window) when a test asks for too much.
    session = (
        session_builder(standalone.master_url, "ray_on_spark-tests")
        .config("spark.scheduler.maxRegisteredResourcesWaitingTime", "2s")
        .getOrCreate()
    )
    wait_for_slots(session.sparkContext, 2, None, 60)
    yield session
    import ray_on_spark

    ray_on_spark.shutdown_ray_cluster()
    session.stop()


@pytest.fixture
def no_ray_left():
    """Assert that a test leaves no Ray process behind (compared to before it ran)."""
    from helpers import ray_processes, wait_no_new_ray_processes

    before = ray_processes()
    yield
    left = wait_no_new_ray_processes(before, timeout=15)
    assert not left, f"Ray processes left behind: {sorted(left)}"
