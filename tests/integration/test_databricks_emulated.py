"""Databricks behaviour, against an EMULATED Databricks runtime in a real IPython kernel.

Databricks cannot run here. What our Databricks hook talks to is emulated faithfully, each
piece real where it can be: a real Jupyter kernel (the notebook), with ``displayHTML`` in
its namespace (recording and displaying the HTML); a stand-in ``dbruntime`` module
(``tests/integration/emulated_databricks``) whose entry point reports an idle time the test
sets and records registered background job groups; ``DATABRICKS_RUNTIME_VERSION`` and the
cluster's ``spark.databricks.*`` confs set on a real SparkSession of the real standalone
cluster; ``/local_disk0/tmp`` made on this host for the test (and removed). The Ray
cluster, the Spark job and the processes are all real.

This module holds no SparkSession of its own: the kernel's application needs the cores.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Dict, List

import pytest

from helpers import ray_processes, wait_no_new_ray_processes

pytestmark = pytest.mark.any_spark  # the hook reads confs and calls the runtime: no pyspark-version path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "emulated_databricks")
ORG_ID, CLUSTER_ID = "2761604089493481", "0311-160038-vjuv0ah9"
WORKSPACE = "adb-2761604089493481.1.azuredatabricks.net"
LOCAL_DISK = "/local_disk0"


class Kernel:
    """A real IPython kernel; ``run(code)`` returns the cell's stream text and its displayed HTML."""

    def __init__(self, env: Dict[str, str]):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", env=env, cwd=ROOT)

    def run(self, code: str, timeout: float = 240) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {"text": [], "html": [], "error": []}

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out["text"].append(content["text"])
            elif kind in ("display_data", "execute_result") and "text/html" in content.get("data", {}):
                out["html"].append(content["data"]["text/html"])
            elif kind == "error":
                out["error"].append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(out["error"]) + "".join(out["text"])[-3000:]
        return out

    def value(self, expression: str) -> object:
        """An expression's value, as JSON through the cell's output."""
        text = "".join(self.run(f"import json as _j; print('VALUE=' + _j.dumps({expression}))")["text"])
        return json.loads(text.split("VALUE=", 1)[1].splitlines()[0])

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


SETUP = """
import json, logging, os, time
from IPython.display import HTML, display
from ray_on_spark.testing.local_standalone import session_builder
from ray_on_spark.spark_env import wait_for_slots

shown = []
def displayHTML(html):  # the notebook's displayHTML: record it, and display it as Databricks does
    shown.append(html)
    display(HTML(html))

spark = (session_builder({master!r}, "emulated-databricks")
         .config("spark.databricks.clusterUsageTags.clusterOwnerOrgId", {org!r})
         .config("spark.databricks.clusterUsageTags.clusterId", {cluster!r})
         .config("spark.databricks.workspaceUrl", {workspace!r})
         .getOrCreate())
wait_for_slots(spark.sparkContext, 2, None, 60)
import dbruntime
import ray_on_spark

class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []
    def emit(self, record):
        self.lines.append(record.getMessage())
recorder = Recorder()
"""

START = """
address, _ = ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
cluster = ray_on_spark.active_cluster()
logging.getLogger("ray_on_spark").addHandler(recorder)  # after setup: it must find no handler of its own

import ray
ray.init()
@ray.remote(num_cpus=1)
def node_env():
    return {k: os.environ.get(k) for k in ("GLOO_SOCKET_IFNAME", "DISABLE_MLFLOW_INTEGRATION",
                                           "DATABRICKS_HOST", "DATABRICKS_TOKEN")}
env_in_task = ray.get(node_env.remote())
ray.shutdown()
"""


@pytest.fixture
def local_disk():
    """``/local_disk0/tmp`` as on a Databricks node (made for the test when this host lacks it, then removed)."""
    made = not os.path.exists(LOCAL_DISK)
    os.makedirs(os.path.join(LOCAL_DISK, "tmp"), exist_ok=True)
    yield os.path.join(LOCAL_DISK, "tmp")
    if made:
        shutil.rmtree(LOCAL_DISK, ignore_errors=True)


def _aliases_to(target: str) -> List[str]:
    return [p for p in glob.glob("/tmp/ros-*") if os.path.islink(p) and os.readlink(p).startswith(target)]


def test_emulated_databricks_notebook_link_job_group_env_and_idle_shutdown(standalone, local_disk):
    before = ray_processes()
    env = dict(os.environ)
    env.update({
        "DATABRICKS_RUNTIME_VERSION": "15.4",
        "DATABRICKS_RAY_ON_SPARK_AUTOSHUTDOWN_MINUTES": "0.1",  # 6 s of reported idleness
        "DATABRICKS_HOST": f"https://{WORKSPACE}", "DATABRICKS_TOKEN": "dapi-emulated",
        "PYTHONPATH": os.pathsep.join([EMULATION, ROOT, env.get("PYTHONPATH", "")]),
        "PYSPARK_PYTHON": sys.executable,
    })
    env.pop("RAY_ADDRESS", None)
    kernel = Kernel(env)
    try:
        kernel.run(SETUP.format(master=standalone.master_url, org=ORG_ID, cluster=CLUSTER_ID, workspace=WORKSPACE))
        started = kernel.run(START)
        text = "".join(started["text"])

        # progress, in the cell, through logging (no print): each stage, then how to connect
        for stage in ("head node up at", "barrier Spark job of 1 task(s) submitted", "worker node 1 of 1 joined",
                      "ready with 1 worker node(s)"):
            assert stage in text, text
        # the driver-proxy link on the workspace's own host, printed and displayed
        cluster = kernel.value("{'port': int(cluster.dashboard_url.rsplit(':', 1)[1]), 'group': cluster.job_group, "
                               "'temp_dir': cluster.temp_dir, 'url': cluster.dashboard_url, "
                               "'groups': dbruntime.ENTRY.job_groups, 'shown': shown, 'env': env_in_task}")
        path = f"/driver-proxy/o/{ORG_ID}/{CLUSTER_ID}/{cluster['port']}/"
        assert f"https://{WORKSPACE}{path}" in text
        assert 9000 <= cluster["port"] < 10000  # the ports the proxy forwards
        assert any(f'href="{path}"' in html for html in cluster["shown"])
        assert any(f'href="{path}"' in html for html in started["html"])  # shown in the cell
        # the dashboard keeps its token: without it, no answer
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(cluster["url"] + "/api/version", timeout=10)
        assert denied.value.code in (401, 403)
        # the barrier job's group is a background job group; the node runs under /local_disk0/tmp
        assert cluster["groups"] == [cluster["group"]]
        assert cluster["temp_dir"].startswith(local_disk + "/ros-")
        assert _aliases_to(cluster["temp_dir"]), "a 43+ character temp dir gets a short alias for Ray's sockets"
        assert cluster["env"] == {"GLOO_SOCKET_IFNAME": "eth0", "DISABLE_MLFLOW_INTEGRATION": "TRUE",
                                  "DATABRICKS_HOST": f"https://{WORKSPACE}", "DATABRICKS_TOKEN": "dapi-emulated"}

        # 7 s of reported idleness > 0.1 min: the cluster shuts itself down and says so
        kernel.run("dbruntime.ENTRY.idle_ms = 7000")
        deadline = time.monotonic() + 30

        def said_so() -> bool:
            return any("no notebook command for" in line and "was shut down" in line
                       for line in kernel.value("recorder.lines"))  # type: ignore[union-attr]

        while not said_so() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert said_so(), kernel.value("recorder.lines")
        assert kernel.value("ray_on_spark.active_cluster() is None")
        assert not wait_no_new_ray_processes(before), "auto-shutdown left Ray processes"
        assert not glob.glob(os.path.join(local_disk, "ros-*")) and not _aliases_to(local_disk)

        # a global cluster is never shut down for idleness, however long the notebook idles
        kernel.run("recorder.lines.clear()\n"
                   "ray_on_spark.setup_global_ray_cluster(max_worker_nodes=1, is_blocking=False)\n"
                   "time.sleep(7)")
        assert kernel.value("ray_on_spark.active_cluster() is not None")
        assert any("never shut down for idleness" in line for line in kernel.value("recorder.lines"))
        assert kernel.value("dbruntime.ENTRY.job_groups")[-1].startswith("ray_on_spark-")
        kernel.run("ray_on_spark.shutdown_ray_cluster()")
        assert not wait_no_new_ray_processes(before)
    finally:
        kernel.close()
    assert not wait_no_new_ray_processes(before)
