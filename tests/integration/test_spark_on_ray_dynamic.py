"""Spark on Ray with Spark's dynamic allocation: executors come from Ray as jobs need them and go back.

A separate driver process (its dynamic-allocation confs must not shape the other tests'
SparkContexts in one gateway JVM) starts a local Ray of 2 CPUs and
``init_spark("dyn", 0, 1, ...)`` with ``spark.dynamicAllocation.enabled=true`` and
``maxExecutors=3``: Spark's own ``ExecutorAllocationManager`` decides, our actors follow.

What it proves, on real Ray and Spark:

* 0 executors at the start, and Ray keeps all its CPUs;
* a shuffle job with 8 waiting tasks makes Spark ask for 3 executors: 2 start (Ray has room
  for 2), the third (executor 2) waits for room without an error -- the log names it and what it
  waits for -- and is given up when the job no longer needs it; the job's result is exact;
* after the job the executors sit idle past ``executorIdleTimeout`` but stay: they hold the
  shuffle's data (shuffle tracking), and a second action reads it again -- its map stage is
  skipped, so the data survived;
* once the shuffle is dropped (garbage-collected in the driver), Spark removes both executors,
  their actors end and Ray has its 2 CPUs back: 0 -> 2 -> 0;
* ``stop_spark`` leaves no executor JVM, actor or temp dir.
"""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import ray_processes, wait_no_new_ray_processes

DRIVER = r"""
import gc, json, logging, os, threading, time
import ray, ray_on_spark
from ray_on_spark.on_ray.api import active_spark
from ray_on_spark import spark_env

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
ray.init(num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False, log_to_driver=False)
before = ray.available_resources()["CPU"]
t0 = time.monotonic()
spark = ray_on_spark.init_spark("dyn", 0, 1, "600MB", configs={
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.maxExecutors": "3",
    "spark.dynamicAllocation.executorIdleTimeout": "2s",
    "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
    "spark.dynamicAllocation.sustainedSchedulerBacklogTimeout": "1s",
})
r = {"init_s": time.monotonic() - t0}
sc = spark.sparkContext
session = active_spark()
r["executors_at_start"] = spark_env.registered_executors(sc)
r["cpu_at_start"] = ray.available_resources().get("CPU", 0)

peak = {"n": 0, "target": 0}
done = threading.Event()
def sample():
    while not done.is_set():
        peak["n"] = max(peak["n"], spark_env.registered_executors(sc))
        peak["target"] = max(peak["target"], spark_env.executor_allocation_target(sc) or 0)
        time.sleep(0.1)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()

def slow(x):
    time.sleep(3)
    return (x % 4, x)
pairs = sc.parallelize(range(8), 8).map(slow).reduceByKey(lambda a, b: a + b)
t1 = time.monotonic()
r["first"] = sorted(pairs.collect())
r["first_job_s"] = time.monotonic() - t1
history = session._dynamic.history
r["one_up_s"] = next((t - t1 for t, n in history if n >= 1), None)  # from the job's submission
r["two_up_s"] = next((t - t1 for t, n in history if n >= 2), None)
r["peak"] = dict(peak)

# idle past executorIdleTimeout, but holding the shuffle's data: kept
time.sleep(6)
r["executors_after_idle"] = spark_env.registered_executors(sc)
t2 = time.monotonic()
r["second"] = sorted(pairs.collect())
r["second_job_s"] = time.monotonic() - t2  # map stage skipped: no 3 s tasks

# drop the shuffle: Spark removes the idle executors, Ray gets its CPUs back
del pairs
t3 = time.monotonic()
while time.monotonic() - t3 < 90 and (spark_env.registered_executors(sc) > 0
                                      or ray.available_resources().get("CPU", 0) < before):
    gc.collect()
    sc._jvm.System.gc()
    time.sleep(1)
r["down_s"] = time.monotonic() - t3
r["executors_at_end"] = spark_env.registered_executors(sc)
r["cpu_at_end"] = ray.available_resources().get("CPU", 0)
r["zero_s"] = next((t - t3 for t, n in session._dynamic.history if t > t3 and n == 0), None)  # from the drop
r["failure"] = str(session.executor_failure) if session.executor_failure else None
done.set()
ray_on_spark.stop_spark()
r["cpu_after_stop"] = ray.available_resources().get("CPU", 0)
r["before"] = before
print("RESULT " + json.dumps(r), flush=True)
ray.shutdown()
"""


def test_executors_follow_sparks_dynamic_allocation_0_to_2_to_0_keeping_shuffle_data():
    baseline = ray_processes()
    out = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=400)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout[-3000:], out.stderr[-6000:])
    r = json.loads(lines[-1][len("RESULT "):])
    print("dynamic allocation:", json.dumps(r))
    expected = sorted({k: sum(x for x in range(8) if x % 4 == k) for k in range(4)}.items())
    assert r["executors_at_start"] == 0 and r["cpu_at_start"] == r["before"] == 2.0
    # Spark asked for 3; Ray had room for 2, the third waited without an error
    assert r["peak"]["target"] == 3 and r["peak"]["n"] == 2, r["peak"]
    assert "executor(s) 2 wait for room in Ray" in out.stderr, out.stderr[-4000:]
    assert "executor 2 was still waiting for Ray and is no longer wanted" in out.stderr, out.stderr[-4000:]
    assert [tuple(p) for p in r["first"]] == expected
    # idle but holding shuffle data: kept, and the second action read that data (no 3 s map tasks again)
    assert r["executors_after_idle"] == 2
    # (running the map stage again would take at least 12 s: 8 tasks of 3 s on 2 executors)
    assert [tuple(p) for p in r["second"]] == expected and r["second_job_s"] < 8.0, r
    # shuffle dropped: 2 -> 0, and Ray has its CPUs back
    assert r["executors_at_end"] == 0 and r["cpu_at_end"] == 2.0, r
    assert r["one_up_s"] is not None and r["two_up_s"] is not None and r["zero_s"] is not None, r
    assert r["failure"] is None
    assert r["cpu_after_stop"] == 2.0
    assert not wait_no_new_ray_processes(baseline)
