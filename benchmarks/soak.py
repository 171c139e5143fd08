"""Soak: a Ray cluster on Spark kept busy for ``--minutes``; one row of figures per minute.

A standalone cluster on 127.0.0.1 of three 1-core workers: two hold the Ray worker nodes
(``setup_ray_cluster(max_worker_nodes=2)``), the third is left to Spark, so the Spark job and
the conversions of each minute have a slot (with every slot held by Ray nodes they would wait
for one forever -- that is the multi-host issue's subject, not this benchmark's). The mix runs
the whole time:

* waves of 20 short tasks (latency, submit to result, gives p50 / p99);
* an actor pool of two actors answering calls;
* every 10 s a 100 MB object made on one worker node and read on the other (crossing nodes);
* once a minute: a Spark job beside the cluster, and a ``from_spark`` / ``to_spark`` round trip.

Each minute prints: tasks done, p50/p99 task latency, actor calls, objects crossed, the seconds
of the Spark job and conversions, the driver's RSS, threads and open fds, the object store's use
(summed over the raylets' own stats), and the Ray processes on the host. Nothing may grow
without bound: the last lines compare the first and the last minute, and the last line is JSON.
Exit status 1 when a minute's Spark or conversion result was wrong or a process was left.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from helpers import ray_processes  # noqa: E402

OBJECT_MB = 100
WAVE = 20
CROSS_EVERY_S = 10.0
#: Seconds kept free at the end of each minute for the Spark job and the round trip.
SPARK_SHARE_S = 12.0
GET_TIMEOUT_S = 120.0


def _object_store_mib() -> float:
    """Bytes in use in every node's object store, from each raylet's own stats (GetNodeStats)."""
    import ray
    from ray._private.internal_api import node_stats

    used = 0
    for node in ray.nodes():
        if node["Alive"]:
            reply = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False)
            used += reply.store_stats.object_store_bytes_used
    return used / 2**20


def _percentile(sorted_values: list, q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def _minute(spark, nodes: list, pool, minute_s: float, baseline: set) -> dict:
    """One minute of the mix; returns its figures."""
    import numpy as np
    import psutil
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import ray_on_spark

    @ray.remote(num_cpus=0.5)
    def short(x: int) -> int:
        return x + 1

    @ray.remote(num_cpus=0.5)
    def make(mb: int):
        return np.ones(mb * 2**20, dtype=np.uint8)

    @ray.remote(num_cpus=0.5)
    def size(array) -> int:
        return int(array.nbytes)

    def on(node_id: str):
        return NodeAffinitySchedulingStrategy(node_id, soft=False)

    t_start = time.monotonic()
    latencies, done, crossed, calls = [], 0, 0, 0
    last_cross = 0.0
    while time.monotonic() - t_start < minute_s - SPARK_SHARE_S:
        t0 = time.monotonic()
        refs = [short.remote(i) for i in range(WAVE)]
        for ref in refs:
            ray.get(ref, timeout=GET_TIMEOUT_S)
            latencies.append((time.monotonic() - t0) * 1000)
        done += len(refs)
        calls += len(list(pool.map(lambda a, v: a.call.remote(v), range(10))))
        if len(nodes) >= 2 and time.monotonic() - last_cross > CROSS_EVERY_S:
            obj = make.options(scheduling_strategy=on(nodes[0])).remote(OBJECT_MB)
            read = size.options(scheduling_strategy=on(nodes[1])).remote(obj)
            assert ray.get(read, timeout=GET_TIMEOUT_S) == OBJECT_MB * 2**20
            del obj, read
            crossed += 1
            last_cross = time.monotonic()
    t0 = time.monotonic()
    groups = spark.range(0, 1_000_000, numPartitions=2).selectExpr("id % 100 AS k").groupBy("k").count().count()
    ds = ray_on_spark.from_spark(spark.range(0, 200_000, numPartitions=2))
    back = ray_on_spark.to_spark(ds, spark).count()
    del ds
    spark_s = time.monotonic() - t0
    driver = psutil.Process()
    latencies.sort()
    return {
        "tasks": done,
        "p50_ms": round(statistics.median(latencies), 1) if latencies else float("nan"),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "actor_calls": calls,
        "objects_crossed": crossed,
        "spark_and_convert_s": round(spark_s, 2),
        "spark_ok": groups == 100 and back == 200_000,
        "driver_rss_mib": round(driver.memory_info().rss / 2**20, 1),
        "driver_threads": driver.num_threads(),
        "driver_fds": driver.num_fds(),
        "object_store_mib": round(_object_store_mib(), 1),
        "ray_processes": len(ray_processes() - baseline),
    }


HEADER = (f"{'min':>3s} {'tasks':>6s} {'p50 ms':>7s} {'p99 ms':>7s} {'actor':>6s} {'100MB':>5s} {'spark s':>7s} "
          f"{'RSS MiB':>8s} {'threads':>7s} {'fds':>5s} {'store MiB':>9s} {'ray procs':>9s}")


def _line(row: dict) -> str:
    return (f"{row['minute']:3d} {row['tasks']:6d} {row['p50_ms']:7.1f} {row['p99_ms']:7.1f} {row['actor_calls']:6d} "
            f"{row['objects_crossed']:5d} {row['spark_and_convert_s']:7.2f} {row['driver_rss_mib']:8.1f} "
            f"{row['driver_threads']:7d} {row['driver_fds']:5d} {row['object_store_mib']:9.1f} "
            f"{row['ray_processes']:9d}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=int, default=30)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray
    from ray.util import ActorPool

    import ray_on_spark
    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder

    rows = []
    before = ray_processes()
    with LocalStandaloneSpark(num_workers=3, cores=1, memory="2g") as local:
        spark = session_builder(local.master_url, "ray_on_spark-soak", executor_memory="1g").getOrCreate()
        try:
            wait_for_slots(spark.sparkContext, 3, None, 120)
            with ray_on_spark.ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1) as cluster:
                ray.init()
                nodes = [n.node_id for n in cluster.worker_nodes()]

                @ray.remote(num_cpus=0)
                class Echo:
                    def call(self, v: int) -> int:
                        return v

                pool = ActorPool([Echo.remote(), Echo.remote()])
                print(f"soak: {len(nodes)} Ray worker nodes, {args.minutes} minute(s)", flush=True)
                print(HEADER, flush=True)
                for minute in range(1, args.minutes + 1):
                    row = {"minute": minute, **_minute(spark, nodes, pool, 60.0, before)}
                    rows.append(row)
                    print(_line(row), flush=True)
                ray.shutdown()
        finally:
            spark.stop()
    deadline = time.monotonic() + 15
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    left = len(ray_processes() - before)
    first, last = rows[0], rows[-1]
    print()
    print("first minute -> last minute")
    for key, unit in (("tasks", ""), ("p50_ms", " ms"), ("p99_ms", " ms"), ("driver_rss_mib", " MiB"),
                      ("driver_threads", ""), ("driver_fds", ""), ("object_store_mib", " MiB"), ("ray_processes", "")):
        print(f"  {key:18s} {first[key]}{unit} -> {last[key]}{unit}")
    print(f"  Ray processes left after shutdown: {left}")
    ok = all(r["spark_ok"] for r in rows) and left == 0
    print(json.dumps({"minutes": rows, "ray_processes_left": left, "all_spark_ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
