"""Ray on Spark with Spark's local masters: local[N] and local-cluster[N,cores,MB]."""

from __future__ import annotations

import pytest
import ray

import ray_on_spark
from helpers import active_spark_jobs


@pytest.mark.parametrize("master", ["local[2]", "local-cluster[2,1,1024]"])
def test_setup_runs_tasks_and_shuts_down_on_local_masters(master, no_ray_left):
    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import session_builder

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


BLOCKER = '''
import importlib.abc, sys
class _NoRay(importlib.abc.MetaPathFinder):
    """This interpreter behaves as if ray and ray_on_spark were not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "ray_on_spark"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None
sys.meta_path.insert(0, _NoRay())
'''


def test_executors_without_ray_fail_setup_fast_with_the_fix(tmp_path, monkeypatch, no_ray_left):
    """The executors' Python cannot import Ray: setup fails within 15 s, names the fix, retries nothing."""
    import os
    import sys
    import time

    from ray_on_spark.testing.local_standalone import session_builder

    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    wrapper = tmp_path / "python-without-ray"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path}:$PYTHONPATH" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PYSPARK_PYTHON", str(wrapper))
    spark = session_builder("local-cluster[2,1,1024]", "ray_on_spark-no-ray-on-executors").getOrCreate()
    try:
        from ray_on_spark.spark_env import wait_for_slots

        wait_for_slots(spark.sparkContext, 2, None, 60)
        t0 = time.monotonic()
        with pytest.raises(ray_on_spark.RayOnSparkError) as err:
            ray_on_spark.setup_ray_cluster(max_worker_nodes=2)
        elapsed = time.monotonic() - t0
        msg = str(err.value)
        assert elapsed < 15, elapsed
        assert "No module named 'ray" in msg
        assert "PYSPARK_PYTHON" in msg and "spark.executorEnv.PATH" in msg
        assert active_spark_jobs(spark.sparkContext) == []
        # nothing keeps retrying: no job of the failed cluster is still running (checked above)
        assert ray_on_spark.active_cluster() is None
        assert os.environ.get("RAY_ADDRESS") is None
    finally:
        spark.stop()


HOME_TOKEN_DRIVER = """
import sys, ray, ray_on_spark
from ray_on_spark.testing.local_standalone import session_builder
spark = session_builder("local[2]", "ray_on_spark-home-token").getOrCreate()
with ray_on_spark.ray_cluster(max_worker_nodes=2):
    ray.init()
    print("RESULT", ray.get(ray.remote(lambda: 6 * 7).remote()), flush=True)
spark.stop()
"""


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_setup_works_when_home_has_a_stale_ray_auth_token(tmp_path, no_ray_left):
    """A plain local ray.init() leaves ~/.ray/auth_token behind; ray.util.spark then fails with
    InvalidAuthToken. Each of our clusters carries its own token, so the file does not matter."""
    import os
    import subprocess
    import sys

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("0" * 64)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, "-c", HOME_TOKEN_DRIVER], env=env, capture_output=True, text=True, timeout=300)
    assert "RESULT 42" in proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 0


TWIN_DRIVER = """
import os, sys, time, ray, ray_on_spark
from ray_on_spark.testing.local_standalone import session_builder
me, other, rendezvous = sys.argv[1], sys.argv[2], sys.argv[3]
spark = session_builder("local[1]", "ray_on_spark-" + me).getOrCreate()
with ray_on_spark.ray_cluster(max_worker_nodes=1) as cluster:
    ray.init()
    open(os.path.join(rendezvous, me), "w").close()
    deadline = time.monotonic() + 180
    while not os.path.exists(os.path.join(rendezvous, other)):   # both clusters are up at once
        assert time.monotonic() < deadline, "the other cluster never came up"
        time.sleep(0.1)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    out = ray.get([ray.remote(lambda: ray.get_runtime_context().get_node_id()).remote() for _ in range(4)])
    print("RESULT", cluster.address, len(nodes), len(set(out)), flush=True)
    open(os.path.join(rendezvous, me + ".done"), "w").close()
    while not os.path.exists(os.path.join(rendezvous, other + ".done")):
        assert time.monotonic() < deadline, "the other cluster never finished"
        time.sleep(0.1)
spark.stop()
"""


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_two_clusters_on_one_host_from_two_drivers_do_not_touch_each_other(tmp_path, no_ray_left):
    import os
    import subprocess
    import sys
    import tempfile

    tmp_before = set(os.listdir(tempfile.gettempdir()))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYSPARK_PYTHON"] = sys.executable
    drivers = [
        subprocess.Popen([sys.executable, "-c", TWIN_DRIVER, me, other, str(tmp_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for me, other in (("a", "b"), ("b", "a"))
    ]
    try:
        outs = [d.communicate(timeout=300) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    results = []
    for d, (out, err) in zip(drivers, outs):
        assert d.returncode == 0, err[-3000:]
        line = [x for x in out.splitlines() if x.startswith("RESULT")][-1].split()
        results.append(line)
    addresses = {r[1] for r in results}
    assert len(addresses) == 2  # two clusters, two heads
    assert all(r[2] == "2" for r in results)  # each sees only its own head + worker
    assert all(r[3] == "1" for r in results)  # and runs work on its own worker
    # no host-wide lock or port files, and none of our temp dirs, left in /tmp
    new = set(os.listdir(tempfile.gettempdir())) - tmp_before
    left = {n for n in new if n.startswith("ros-") or any(w in n.lower() for w in ("ray", "lock", "port"))}
    assert not left, left


def test_num_cpus_worker_node_uses_a_stage_level_task_profile(no_ray_left):
    """num_cpus_worker_node=2 on 2-core executors (spark.task.cpus=1): one node owning both CPUs."""
    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import session_builder

    spark = session_builder("local-cluster[1,2,1536]", "ray_on_spark-task-profile").getOrCreate()
    try:
        wait_for_slots(spark.sparkContext, 2, None, 60)
        with ray_on_spark.ray_cluster(max_worker_nodes=1, num_cpus_worker_node=2) as cluster:
            nodes = cluster.worker_nodes()
            assert len(nodes) == 1
            assert nodes[0].resources["CPU"] == 2.0
            assert cluster.plan.use_task_profile
    finally:
        spark.stop()
