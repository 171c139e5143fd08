"""A spark-submit application that runs Ray on the cluster it was submitted to.

    spark-submit --master spark://HOST:7077 examples/spark_submit_app.py --workers 2

Prints one JSON line: the Ray nodes that did the work and the timings.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

import ray
from pyspark.sql import SparkSession

import ray_on_spark


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    spark = SparkSession.builder.appName("ray_on_spark-spark-submit-example").getOrCreate()
    try:
        t0 = time.monotonic()
        with ray_on_spark.ray_cluster(max_worker_nodes=args.workers, num_cpus_worker_node=1) as cluster:
            setup_s = time.monotonic() - t0
            ray.init()

            @ray.remote(num_cpus=1)
            def square(x: int):
                time.sleep(0.2)
                return x * x, ray.get_runtime_context().get_node_id()

            results = ray.get([square.remote(i) for i in range(8)])
            by_node = collections.Counter(node for _, node in results)
            report = {
                "address": cluster.address,
                "sum_of_squares": sum(v for v, _ in results),
                "tasks_per_node": dict(by_node),
                "setup_s": round(setup_s, 2),
            }
        print(json.dumps(report), flush=True)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
