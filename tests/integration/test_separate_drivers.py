"""Separate Spark applications on the standalone cluster: the quickstart notebook (real
kernel), a spark-submit application, and a driver that gets killed.

This module holds no SparkSession of its own: the notebook kernel and the submitted
application are separate Spark applications that need the cluster's cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import ray_processes, wait_no_new_ray_processes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quickstart_notebook_runs_with_a_real_kernel(standalone, monkeypatch):
    before = ray_processes()
    monkeypatch.setenv("RAY_ON_SPARK_MASTER", standalone.master_url)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    nb = nbformat.read(os.path.join(ROOT, "notebooks", "ray_on_spark_quickstart.ipynb"), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "sum of squares: 140" in outputs
    assert not wait_no_new_ray_processes(before)


def test_spark_submit_application_runs_ray_and_cleans_up(standalone):
    from ray_on_spark.spark_env import java_env, spark_home

    before = ray_processes()
    env = java_env()
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [os.path.join(spark_home(), "bin", "spark-submit"), "--master", standalone.master_url,
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
         os.path.join(ROOT, "examples", "spark_submit_app.py"), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert report["sum_of_squares"] == 140
    assert len(report["tasks_per_node"]) == 2
    assert not wait_no_new_ray_processes(before)


DRIVER = """
import sys, time
from ray_on_spark.testing.local_standalone import session_builder
import ray_on_spark
from ray_on_spark.spark_env import wait_for_slots
spark = session_builder(sys.argv[1], "ray_on_spark-doomed-driver").getOrCreate()
wait_for_slots(spark.sparkContext, 2, None, 60)
ray_on_spark.setup_ray_cluster(max_worker_nodes=2, collect_log_to_path=sys.argv[2])
print("UP", flush=True)
time.sleep(600)
"""


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_killing_the_driver_takes_every_ray_process_with_it(standalone, tmp_path):
    import signal
    import tempfile
    import time

    before = ray_processes()
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("RAY_ADDRESS", None)
    logs = tmp_path / "logs"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, standalone.master_url, str(logs)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert driver.stdout.readline().strip() == "UP"
        assert len({p for p in ray_processes() if p not in before}) >= 10  # head + 2 worker nodes
        t0 = time.monotonic()
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        left = wait_no_new_ray_processes(before, timeout=15)
        assert not left, f"still alive {time.monotonic() - t0:.1f}s after the driver died: {sorted(left)}"
        print(f"every Ray process gone {time.monotonic() - t0:.1f}s after the driver was killed")
        left_dirs = [n for n in set(os.listdir(tempfile.gettempdir())) - tmp_before if n.startswith("ros-")]
        assert not left_dirs, left_dirs  # the supervisors removed the head's and the nodes' temp dirs
        # collect_log_to_path: the supervisors copied every node's logs on their way out, driver dead or not
        dirs = sorted(p.name for p in logs.iterdir())
        assert len([d for d in dirs if d.startswith("ray-head-")]) == 1, dirs
        assert len([d for d in dirs if d.startswith("ray-worker-")]) == 2, dirs
    finally:
        if driver.poll() is None:
            driver.kill()


GLOBAL_OWNER = """
import logging, sys
logging.basicConfig(level=logging.INFO)
from ray_on_spark.testing.local_standalone import session_builder
import ray_on_spark
from ray_on_spark.spark_env import wait_for_slots
spark = session_builder(sys.argv[1], "ray_on_spark-global").getOrCreate()
wait_for_slots(spark.sparkContext, 2, None, 60)
ray_on_spark.setup_global_ray_cluster(max_worker_nodes=2, num_cpus_head_node=0)  # blocks until SIGTERM
print("RETURNED", flush=True)
"""

GLOBAL_CLIENT = """
import json, ray, ray_on_spark
from ray_on_spark.errors import RayOnSparkError
try:
    ray_on_spark.setup_global_ray_cluster(max_worker_nodes=1)
    second = "started"
except RayOnSparkError as e:
    second = str(e)
ray_on_spark.connect_global_cluster()
@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()
nodes = set(ray.get([where.remote() for _ in range(8)]))
print("CLIENT " + json.dumps({"second": second, "worker_nodes": len([n for n in ray.nodes() if n["Alive"]]) - 1,
                              "task_nodes": len(nodes)}), flush=True)
"""


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_global_cluster_serves_other_drivers_and_stops_on_sigterm(standalone, tmp_path):
    """setup_global_ray_cluster blocks; other drivers connect through the private state dir; SIGTERM ends it."""
    import signal
    import stat
    import time

    before = ray_processes()
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, XDG_RUNTIME_DIR=str(tmp_path))
    env.pop("RAY_ADDRESS", None)
    state = tmp_path / "ray_on_spark"
    owner = subprocess.Popen([sys.executable, "-c", GLOBAL_OWNER, standalone.master_url], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (state / "global-cluster.json").exists():  # published once the cluster is up
            assert owner.poll() is None, owner.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the global cluster did not come up in 120 s"
            time.sleep(0.2)
        for name in ("global-cluster.json", "global-cluster.token"):
            assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
        for _ in range(2):  # two drivers, one after the other, use the same cluster
            client = subprocess.run([sys.executable, "-c", GLOBAL_CLIENT], env=env, capture_output=True, text=True,
                                    timeout=120)
            assert client.returncode == 0, client.stderr[-3000:]
            got = json.loads([x for x in client.stdout.splitlines() if x.startswith("CLIENT ")][-1][7:])
            assert "already running" in got["second"], got  # a second global cluster is refused
            assert got["worker_nodes"] == 2 and got["task_nodes"] >= 1, got
        assert owner.poll() is None  # still serving
        t0 = time.monotonic()
        owner.send_signal(signal.SIGTERM)
        out, err = owner.communicate(timeout=60)
        assert owner.returncode == 0, err[-3000:]
        assert "RETURNED" in out
        left = wait_no_new_ray_processes(before, timeout=15)
        assert not left, sorted(left)
        print(f"global cluster stopped {time.monotonic() - t0:.1f}s after SIGTERM")
        assert not (state / "global-cluster.json").exists() and not (state / "global-cluster.token").exists()
    finally:
        if owner.poll() is None:
            owner.kill()
