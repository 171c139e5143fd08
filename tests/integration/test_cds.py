"""Class-data archives (ray_on_spark.on_ray.cds): the first Spark-on-Ray session on a host records
its JVMs' classes and builds the archives as it exits; the next session's driver and
executor JVMs map them.

Two separate driver processes, each with a fresh Ray and its own driver JVM (launched by
init_spark, so the driver archive applies too), share an empty cache dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DRIVER = r"""
import json, ray, ray_on_spark
from pyspark import SparkContext
ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, log_to_driver=False)
spark = ray_on_spark.init_spark("cds", num_executors=2, executor_cores=1, executor_memory="512MB")
assert spark.range(1000).selectExpr("id % 7 AS k").groupBy("k").count().count() == 7
pids = {"driver": [SparkContext._gateway.proc.pid],
        "executors": sum(ray.get([a.jvm_pids.remote() for a in ray_on_spark.active_spark().actors]), [])}
maps = {}
for kind, ps in pids.items():
    maps[kind] = [sorted({l.split()[-1] for l in open(f"/proc/{p}/maps")
                          if l.rstrip().endswith(".jsa") and "ray_on_spark" in l}) for p in ps]
import psutil
maps["driver_cmdline"] = psutil.Process(pids["driver"][0]).cmdline()
ray_on_spark.stop_spark()
ray.shutdown()
print("RESULT " + json.dumps(maps), flush=True)
"""


def _run(env) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads([x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])


def test_first_session_builds_archives_and_the_next_one_maps_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(XDG_CACHE_HOME=str(tmp_path), RAY_ON_SPARK_CDS="1", PYSPARK_PYTHON=sys.executable)
    first = _run(env)  # exits only after its archive builds finished (they are its children)
    # init_spark launched this driver's JVM, so it has ray_on_spark.on_ray.jit's options too.
    assert "-XX:Tier4InvocationThreshold=50000" in first.pop("driver_cmdline"), first
    assert all(not m for ms in first.values() for m in ms), first  # nothing to map yet
    root = tmp_path / "ray_on_spark" / "cds"
    (key,) = list(root.iterdir())
    assert oct(key.stat().st_mode & 0o777) == "0o700"
    names = sorted(p.name for p in key.iterdir())
    assert "executor.jsa" in names and "driver.jsa" in names, names
    assert not [n for n in names if n.endswith(".classlist") or ".tmp-" in n], names  # lists and partial files gone

    second = _run(env)
    second.pop("driver_cmdline")
    assert second["driver"] == [[str(key / "driver.jsa")]], second
    assert len(second["executors"]) == 2 and all(m == [str(key / "executor.jsa")] for m in second["executors"]), second
