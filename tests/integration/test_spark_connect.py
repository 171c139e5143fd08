"""A Spark Connect session cannot host Ray (or Spark on Ray): both entry points refuse it in under a second.

A real Spark Connect server, started with spark-submit from pyspark's own jars
(``org.apache.spark.sql.connect.service.SparkConnectServer``), and a client session on it
(``SparkSession.builder.remote``) in a separate Python: Connect mode is process-wide in
pyspark, so it must not touch the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import ray_processes, wait_no_new_ray_processes

pytestmark = pytest.mark.any_spark  # pyspark 3.5's wheel ships no Spark Connect server jar

CLIENT = r"""
import json, sys, time
from pyspark.sql import SparkSession
import ray_on_spark
from ray_on_spark.errors import SparkConnectSessionError

spark = SparkSession.builder.remote(sys.argv[1]).getOrCreate()
assert spark.range(3).count() == 3  # a working Connect session
out = {"session": type(spark).__module__}
for name, call in (("setup_ray_cluster", lambda: ray_on_spark.setup_ray_cluster(max_worker_nodes=1)),
                   ("init_spark", lambda: ray_on_spark.init_spark("connect", 1, 1, "1g"))):
    t0 = time.monotonic()
    try:
        call()
        out[name] = {"refused": False}
    except SparkConnectSessionError as e:
        out[name] = {"refused": True, "seconds": time.monotonic() - t0, "message": str(e)}
import ray
out["ray_connected"] = ray.is_initialized()
print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.fixture
def connect_server(tmp_path):
    from ray_on_spark.runtime.ports import free_ports, port_open
    from ray_on_spark.runtime.waiting import wait_until
    from ray_on_spark.spark_env import java_env, spark_home

    port = free_ports(1)[0]
    env = java_env()
    env["PYSPARK_PYTHON"] = sys.executable
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [os.path.join(spark_home(), "bin", "spark-submit"), "--class",
             "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", "local[1]",
             "--conf", f"spark.connect.grpc.binding.port={port}",
             "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
             "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1", "spark-internal"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def server_died() -> None:
        if server.poll() is not None:
            raise RuntimeError(f"the Spark Connect server exited: {log.read_text()[-3000:]}")

    try:
        wait_until(lambda: port_open("127.0.0.1", port), timeout=120, what="the Spark Connect server",
                   check=server_died)
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_spark_connect_session_is_refused_by_both_directions_at_once(connect_server):
    before = ray_processes()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SPARK_REMOTE")}
    proc = subprocess.run([sys.executable, "-c", CLIENT, connect_server], env=env, capture_output=True, text=True,
                          timeout=240)
    results = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    # (pyspark's Connect client exits 0 without a word when its own dependencies are missing)
    assert proc.returncode == 0 and results, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(results[-1][len("RESULT "):])
    assert out["session"].startswith("pyspark.sql.connect")
    for name in ("setup_ray_cluster", "init_spark"):
        assert out[name]["refused"] and out[name]["seconds"] < 1.0, out
        message = out[name]["message"]
        assert "Spark Connect session" in message and "classic" in message and "single user" in message, message
    assert not out["ray_connected"]  # refused before connecting to (or starting) Ray
    assert not wait_no_new_ray_processes(before)
