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
from nbclient import NotebookClient

from helpers import ray_processes, wait_no_new_ray_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    from ray_on_spark.local_standalone import java_env, spark_home

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
from ray_on_spark.local_standalone import session_builder
import ray_on_spark
from ray_on_spark.spark_env import wait_for_slots
spark = session_builder(sys.argv[1], "ray_on_spark-doomed-driver").getOrCreate()
wait_for_slots(spark.sparkContext, 2, None, 60)
ray_on_spark.setup_ray_cluster(max_worker_nodes=2)
print("UP", flush=True)
time.sleep(600)
"""


def test_killing_the_driver_takes_every_ray_process_with_it(standalone):
    import signal
    import time

    import tempfile

    before = ray_processes()
    tmp_before = set(os.listdir(tempfile.gettempdir()))
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    env.pop("RAY_ADDRESS", None)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, standalone.master_url], env=env,
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
    finally:
        if driver.poll() is None:
            driver.kill()
