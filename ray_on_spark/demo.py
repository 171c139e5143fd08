"""``python -m ray_on_spark.demo``: Ray on a Spark cluster, a workload, shutdown.

Without ``--master`` it brings up its own Spark standalone cluster on 127.0.0.1
(2 workers x 1 core), so it runs on a fresh machine with nothing else set up.
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
import time
from typing import List, Optional


def _estimate_pi(samples: int) -> int:
    import random

    rnd = random.Random()
    return sum(1 for _ in range(samples) if rnd.random() ** 2 + rnd.random() ** 2 <= 1.0)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--master", help="an existing Spark master URL (default: start a local standalone cluster)")
    p.add_argument("--workers", type=int, default=2, help="Ray worker nodes (= Spark task slots used)")
    p.add_argument("--tasks", type=int, default=16)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "ray"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import ray

    import ray_on_spark
    from ray_on_spark.on_spark.ray_start import LABEL_PARTITION
    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder

    timings = {}
    local = None
    spark = None
    try:
        t = time.monotonic()
        if args.master is None:
            local = LocalStandaloneSpark(num_workers=args.workers, cores=1, memory="2g").start()
            master = local.master_url
        else:
            master = args.master
        spark = session_builder(master, "ray_on_spark-demo").getOrCreate()
        timings["spark_up_s"] = time.monotonic() - t

        t = time.monotonic()
        with ray_on_spark.ray_cluster(max_worker_nodes=args.workers, num_cpus_worker_node=1) as cluster:
            timings["ray_setup_s"] = time.monotonic() - t
            print(f"Ray cluster {cluster.address} (dashboard {cluster.dashboard_url})")
            partition_of = {n.node_id: n.labels.get(LABEL_PARTITION) for n in cluster.worker_nodes()}
            ray.init()

            @ray.remote(num_cpus=1)
            def work(samples: int):
                return ray.get_runtime_context().get_node_id(), _estimate_pi(samples)

            t = time.monotonic()
            results = ray.get([work.remote(400_000) for _ in range(args.tasks)])
            timings["workload_s"] = time.monotonic() - t
            per_node = collections.Counter(node for node, _ in results)
            inside = sum(hits for _, hits in results)
            print(f"pi ~= {4 * inside / (400_000 * args.tasks):.5f} from {args.tasks} Ray tasks")
            for node, count in sorted(per_node.items()):
                print(f"  node {node[:12]} (Spark task partition {partition_of.get(node)}): {count} tasks")
            if len(per_node) < min(args.workers, args.tasks):
                print("ERROR: the work did not spread over every worker node", file=sys.stderr)
                return 1
            t = time.monotonic()
        timings["ray_shutdown_s"] = time.monotonic() - t
    finally:
        ray_on_spark.shutdown_ray_cluster()
        if spark is not None:
            spark.stop()
        if local is not None:
            local.stop()
    print("timings: " + ", ".join(f"{k}={v:.1f}" for k, v in timings.items()))
    print("demo finished; Ray cluster and Spark stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
