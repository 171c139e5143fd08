"""What Ray 2.60's users configure, honoured on a real standalone cluster: node size defaults,
``RAY_ON_SPARK_*`` overrides, a start hook, a long temp root, a head GPU count.

A separate driver process: its Spark worker has 2 cores (one executor of 2 cores), and
``spark.executorEnv.*`` settings are fixed per application, so it makes its own cluster and
sessions and leaves the shared fixtures alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

from helpers import ray_processes, wait_no_new_ray_processes

GIB, MIB = 2**30, 2**20

HOOK = textwrap.dedent("""
    import json, os

    class RecordingHook:
        '''A user's start hook, Ray style: constructed with no argument, methods as Ray names them.'''

        def _note(self, *event):
            with open(os.environ["HOOK_LOG"], "a") as f:
                f.write(json.dumps(list(event)) + "\\n")

        def get_default_temp_root_dir(self):
            self._note("get_default_temp_root_dir")
            return os.environ["LONG_ROOT"]

        def custom_environment_variables(self):
            self._note("custom_environment_variables")
            return {"FROM_USER_HOOK": "yes"}

        def on_spark_job_created(self, job_group_id):
            self._note("on_spark_job_created", job_group_id)

        def on_ray_dashboard_created(self, port):
            self._note("on_ray_dashboard_created", port)

        def on_cluster_created(self, handler):
            self._note("on_cluster_created", handler.address, handler.is_shutdown)
""")

DRIVER = r"""
import glob, json, logging, os, time
logging.basicConfig(level=logging.INFO)
import ray, ray_on_spark
from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder
from ray_on_spark.spark_env import wait_for_slots

GIB, MIB = 2**30, 2**20
root = os.environ["LONG_ROOT"]
out = {}

def aliases():
    return [p for p in glob.glob("/tmp/ros-*") if os.path.islink(p) and os.readlink(p).startswith(root)]

def refused(call):
    t0 = time.monotonic()
    try:
        call()
    except ValueError as e:
        return {"message": str(e), "seconds": time.monotonic() - t0}
    return None

with LocalStandaloneSpark(num_workers=1, cores=2, memory="2g") as cluster:
    spark = (session_builder(cluster.master_url, "ray_on_spark-settings")
             .config("spark.executorEnv.RAY_ON_SPARK_WORKER_PHYSICAL_MEMORY_BYTES", str(8 * GIB))
             .config("spark.executorEnv.RAY_ON_SPARK_WORKER_SHARED_MEMORY_BYTES", str(512 * MIB))
             .getOrCreate())
    wait_for_slots(spark.sparkContext, 2, None, 60)
    # no num_cpus_worker_node: a whole executor (2 cores), as in Ray; a GPU count for the head
    with ray_on_spark.ray_cluster(max_worker_nodes=1, num_gpus_head_node=1) as rc:
        node = rc.worker_nodes()[0]
        ray.init()
        head = [n for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]][0]

        @ray.remote(num_cpus=2)
        def env():
            return os.environ.get("FROM_USER_HOOK")

        out.update(node=node.resources, head_gpus=head["Resources"].get("GPU"), task_env=ray.get(env.remote()),
                   temp_dir=rc.temp_dir, aliases=len(aliases()), job_group=rc.job_group,
                   dashboard_port=int(rc.dashboard_url.rsplit(":", 1)[1]), address=rc.address)
        ray.shutdown()
    out["left_in_root"] = os.listdir(root)
    out["aliases_after"] = len(aliases())

    os.environ["RAY_ON_SPARK_DRIVER_PHYSICAL_MEMORY_BYTES"] = "lots"
    out["bad_driver"] = refused(lambda: ray_on_spark.setup_ray_cluster(max_worker_nodes=1))
    del os.environ["RAY_ON_SPARK_DRIVER_PHYSICAL_MEMORY_BYTES"]
    spark.stop()

    # RAY_ON_SPARK_WORKER_CPU_CORES=1 on the executors: 1-CPU nodes, two on the 2-core executor
    spark = (session_builder(cluster.master_url, "ray_on_spark-cpu-override")
             .config("spark.executorEnv.RAY_ON_SPARK_WORKER_CPU_CORES", "1").getOrCreate())
    wait_for_slots(spark.sparkContext, 2, None, 60)
    with ray_on_spark.ray_cluster(max_worker_nodes=2) as rc:
        out["override_nodes"] = [n.resources.get("CPU") for n in rc.worker_nodes()]
    spark.stop()

    spark = (session_builder(cluster.master_url, "ray_on_spark-bad-settings")
             .config("spark.executorEnv.RAY_ON_SPARK_WORKER_SHARED_MEMORY_BYTES", "half").getOrCreate())
    out["bad_worker"] = refused(lambda: ray_on_spark.setup_ray_cluster(max_worker_nodes=1))
    spark.stop()
print("RESULT " + json.dumps(out), flush=True)
"""


def test_ray_settings_node_size_overrides_hook_and_long_temp_root(tmp_path):
    before = ray_processes()
    (tmp_path / "user_hook_module.py").write_text(HOOK)
    base = tempfile.mkdtemp(prefix="rost-")  # pytest's tmp_path alone is longer than 48 characters
    long_root = base + "/" + "x" * (48 - len(base) - 1)
    assert len(long_root) == 48
    os.makedirs(long_root)
    try:
        _run_and_check(tmp_path, long_root, before)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_and_check(tmp_path, long_root: str, before) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYSPARK_PYTHON=sys.executable, LONG_ROOT=long_root, HOOK_LOG=str(tmp_path / "hook.log"),
               RAY_ON_SPARK_START_HOOK="user_hook_module.RecordingHook",
               PYTHONPATH=os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])

    # node size: the whole 2-core executor; memory from the overrides, /dev/shm capping the store
    assert out["node"]["CPU"] == 2.0, out
    assert out["override_nodes"] == [1.0, 1.0], out  # RAY_ON_SPARK_WORKER_CPU_CORES=1
    assert out["node"]["object_store_memory"] == int(512 * MIB * 0.8), out
    assert out["node"]["memory"] + out["node"]["object_store_memory"] <= 8 * GIB * 0.8, out
    assert out["head_gpus"] == 1.0  # a count without driver GPU addresses, as in Ray
    assert "no addresses were assigned" in proc.stderr

    # the user's hook, at Ray's moments, in Ray's order; its variables reach the nodes
    events = [json.loads(line) for line in (tmp_path / "hook.log").read_text().splitlines()][:5]  # then refusals
    assert [e[0] for e in events] == ["get_default_temp_root_dir", "custom_environment_variables",
                                      "on_spark_job_created", "on_ray_dashboard_created", "on_cluster_created"]
    assert events[2][1] == out["job_group"] and events[3][1] == out["dashboard_port"]
    assert events[4][1:] == [out["address"], False]
    assert out["task_env"] == "yes"

    # the 48-character root from the hook holds the cluster; Ray's sockets went through a short alias
    assert out["temp_dir"].startswith(long_root + "/ros-") and out["aliases"] >= 2  # head + worker
    assert out["left_in_root"] == [] and out["aliases_after"] == 0

    # bad overrides: refused at once, naming the variable
    assert "RAY_ON_SPARK_DRIVER_PHYSICAL_MEMORY_BYTES='lots'" in out["bad_driver"]["message"]
    assert "RAY_ON_SPARK_WORKER_SHARED_MEMORY_BYTES='half'" in out["bad_worker"]["message"]
    assert out["bad_driver"]["seconds"] < 1.0 and out["bad_worker"]["seconds"] < 1.0
    assert not wait_no_new_ray_processes(before)
