"""One program, two engines: Spark ETL -> Ray Data batch inference -> Spark, with no second cluster.

The way many teams glue Spark and Ray today is two clusters sharing object storage: Spark
writes Parquet, a Ray job reads it, writes its results as Parquet, and Spark reads those.
With ``ray_on_spark`` both engines run in one program and the data passes through Ray's
object store (``from_spark`` / ``to_spark``). This example runs the same pipeline both ways,
in the same run, and prints where each stage ran and how long it took:

1. generate a taxi-like data set (trips and zones) as Parquet, locally -- no downloads;
2. Spark ETL: read Parquet, filter, join the zones, aggregate a per-zone feature;
3. Ray Data batch inference with an actor pool (a small linear model made with numpy);
4. Spark writes the predictions as Parquet.

Run it on Ray on Spark (``setup_ray_cluster``), on Spark on Ray (``init_spark``), or both::

    python examples/two_engines_one_program.py --mode both --rows 200000
    python examples/two_engines_one_program.py --mode ray-on-spark --master spark://HOST:7077

Without ``--master`` the Ray-on-Spark side starts a Spark standalone cluster on 127.0.0.1
(2 workers x 1 core). A Ray worker node holds its Spark slot for the cluster's life, so Spark
keeps the rest for its own stages (``--ray-nodes``, default 1). The last line is JSON with
every timing.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

import ray_on_spark

#: The "model": tip = features @ WEIGHTS + BIAS (weights made up, fixed so both ways agree exactly).
FEATURES = ["distance_km", "duration_min", "fare", "passengers", "zone_avg_fare"]
WEIGHTS = np.array([0.35, 0.02, 0.12, -0.05, 0.03])
BIAS = 0.4


class TipModel:
    """Ray Data's actor pool loads the model once per actor and scores batches with numpy."""

    def __init__(self) -> None:
        import ray

        self.weights, self.bias = WEIGHTS.copy(), BIAS
        self.node = ray.get_runtime_context().get_node_id()[:12]

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = np.column_stack([batch[name].astype(np.float64) for name in FEATURES])
        batch["predicted_tip"] = x @ self.weights + self.bias
        batch["ray_node"] = np.full(len(x), self.node)
        return batch


def generate(spark, workdir: str, rows: int) -> None:
    """Trips and zones as Parquet (what would sit in object storage)."""
    zones = spark.range(0, 50).selectExpr(
        "CAST(id AS INT) AS zone_id",
        "element_at(array('Manhattan', 'Brooklyn', 'Queens', 'Bronx', 'Staten Island'), CAST(id % 5 AS INT) + 1) "
        "AS borough",
    )
    zones.write.mode("overwrite").parquet(os.path.join(workdir, "zones"))
    trips = spark.range(0, rows, numPartitions=4).selectExpr(
        "id AS trip_id",
        "CAST(id * 7 % 50 AS INT) AS pickup_zone",
        "rand(1) * 20 AS distance_km",
        "rand(2) * 50 + 2 AS duration_min",
        "CAST(1 + rand(3) * 4 AS INT) AS passengers",
    ).selectExpr("*", "2.5 + distance_km * 1.8 + duration_min * 0.3 AS fare")
    trips.write.mode("overwrite").parquet(os.path.join(workdir, "trips"))


def etl(spark, workdir: str):
    """Spark: read, filter, join, aggregate -> one row of features per trip."""
    trips = spark.read.parquet(os.path.join(workdir, "trips")).where("distance_km > 0.5 AND fare > 0")
    zones = spark.read.parquet(os.path.join(workdir, "zones"))
    zone_avg = trips.groupBy("pickup_zone").agg({"fare": "avg"}).withColumnRenamed("avg(fare)", "zone_avg_fare")
    return (trips.join(zones, trips.pickup_zone == zones.zone_id).join(zone_avg, "pickup_zone")
            .select("trip_id", "borough", *FEATURES))


def infer(ds):
    """Ray Data: batch inference on an actor pool of two."""
    return ds.map_batches(TipModel, batch_format="numpy", batch_size=4096, concurrency=2, num_cpus=0.5)


def one_program(spark, workdir: str) -> Dict[str, float]:
    """The integrated way: Spark -> from_spark -> Ray Data -> to_spark -> Spark, through the object store."""
    t: Dict[str, float] = {}
    t0 = time.monotonic()
    features = etl(spark, workdir)
    ds = ray_on_spark.from_spark(features)
    t["etl_and_from_spark_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    scored = infer(ds).materialize()
    t["inference_s"] = time.monotonic() - t1
    t2 = time.monotonic()
    out = ray_on_spark.to_spark(scored, spark)
    out.write.mode("overwrite").parquet(os.path.join(workdir, "predictions_one_program"))
    t["to_spark_and_write_s"] = time.monotonic() - t2
    t["total_s"] = time.monotonic() - t0
    return t


def two_clusters(spark, workdir: str) -> Dict[str, float]:
    """The two-cluster way: Spark writes Parquet, Ray reads it and writes Parquet, Spark reads that."""
    import ray

    t: Dict[str, float] = {}
    t0 = time.monotonic()
    etl(spark, workdir).write.mode("overwrite").parquet(os.path.join(workdir, "features"))
    t["etl_and_write_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    ray_out = os.path.join(workdir, "predictions_ray")
    shutil.rmtree(ray_out, ignore_errors=True)
    # The read runs first, on its own: Ray Data starts the actor pool at once, and on a small cluster its actors
    # would hold the CPU that the read's file listing (1 CPU) waits for. The writes take a small share.
    features = ray.data.read_parquet(os.path.join(workdir, "features")).materialize()
    infer(features).write_parquet(ray_out, ray_remote_args={"num_cpus": 0.25})
    t["read_inference_write_s"] = time.monotonic() - t1
    t2 = time.monotonic()
    spark.read.parquet(ray_out).write.mode("overwrite").parquet(os.path.join(workdir, "predictions_two_clusters"))
    t["spark_read_and_write_s"] = time.monotonic() - t2
    t["total_s"] = time.monotonic() - t0
    return t


def summary(spark, workdir: str, name: str) -> Dict[str, object]:
    """What landed in a predictions directory, and which Ray nodes scored it."""
    df = spark.read.parquet(os.path.join(workdir, name))
    row = df.selectExpr("count(*) AS n", "round(sum(predicted_tip), 3) AS tips").collect()[0]
    nodes = collections.Counter(r.ray_node for r in df.groupBy("ray_node").count().collect())
    return {"rows": row.n, "sum_predicted_tip": float(row.tips), "ray_nodes": sorted(nodes)}


def run_pipelines(spark, workdir: str, rows: int, label: str, reps: int) -> Dict[str, object]:
    """Both ways, ``reps`` times, alternating which goes first; the first round pays each way's one-time costs
    (code generation, the conversions' Python workers and writer), so the last round is the warm figure."""
    generate(spark, workdir, rows)
    hosts = sorted(set(spark.sparkContext.parallelize(range(4), 4).map(lambda _: __import__("socket").gethostname())
                       .collect()))
    print(f"[{label}] Spark ETL and writes run on executors on host(s) {hosts}")
    rounds = []
    for rep in range(reps):
        if rep % 2:
            files, integrated = two_clusters(spark, workdir), one_program(spark, workdir)
        else:
            integrated, files = one_program(spark, workdir), two_clusters(spark, workdir)
        rounds.append((integrated, files))
        print(f"[{label}] round {rep + 1}: one program {integrated['total_s']:.2f}s, two clusters through Parquet "
              f"{files['total_s']:.2f}s", flush=True)
    one, two = summary(spark, workdir, "predictions_one_program"), summary(spark, workdir, "predictions_two_clusters")
    assert one["rows"] == two["rows"] and abs(one["sum_predicted_tip"] - two["sum_predicted_tip"]) < 1e-3, (one, two)
    print(f"[{label}] Ray Data inference ran on Ray nodes {one['ray_nodes']} (one program), "
          f"{two['ray_nodes']} (two clusters); {one['rows']} trips scored both ways, same predictions")
    integrated, files = rounds[-1]
    print(f"[{label}] last round, stage by stage:")
    for stage, seconds in integrated.items():
        print(f"[{label}]   one program:  {stage:24} {seconds:8.2f}")
    for stage, seconds in files.items():
        print(f"[{label}]   two clusters: {stage:24} {seconds:8.2f}")
    ratio = files["total_s"] / integrated["total_s"]
    print(f"[{label}] one program {integrated['total_s']:.2f}s vs two clusters through Parquet {files['total_s']:.2f}s "
          f"(two clusters / one program = {ratio:.2f})", flush=True)
    return {"one_program": integrated, "two_clusters": files, "rows_scored": one["rows"], "ray_nodes": one["ray_nodes"],
            "first_round": {"one_program_s": rounds[0][0]["total_s"], "two_clusters_s": rounds[0][1]["total_s"]},
            "two_clusters_over_one_program": round(ratio, 2)}


def ray_on_spark_mode(rows: int, master: Optional[str], ray_nodes: int, reps: int) -> Dict[str, object]:
    """Ray started on the Spark application (setup_ray_cluster)."""
    import ray

    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder

    local = None
    if master is None:
        local = LocalStandaloneSpark(num_workers=2, cores=1, memory="2g").start()
        master = local.master_url
    spark = session_builder(master, "two-engines-ray-on-spark").getOrCreate()
    try:
        # A Ray worker node holds its Spark slot for the cluster's life: leave Spark a slot for its own stages
        # (ETL, conversions, writes), and give the head on the driver a CPU for Ray Data.
        with tempfile.TemporaryDirectory(prefix="ros-two-engines-") as workdir, \
                ray_on_spark.ray_cluster(max_worker_nodes=ray_nodes, num_cpus_worker_node=1, num_cpus_head_node=1):
            ray.init(logging_level=logging.WARNING, log_to_driver=False)
            try:
                return run_pipelines(spark, workdir, rows, "ray-on-spark", reps)
            finally:
                ray.shutdown()
    finally:
        spark.stop()
        if local is not None:
            local.stop()


def spark_on_ray_mode(rows: int, reps: int) -> Dict[str, object]:
    """Spark started on a Ray cluster (init_spark), RayDP's way."""
    import ray

    ray.init(num_cpus=4, object_store_memory=600 * 2**20, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        spark = ray_on_spark.init_spark("two-engines-spark-on-ray", num_executors=2, executor_cores=1,
                                        executor_memory="1GB")
        with tempfile.TemporaryDirectory(prefix="ros-two-engines-") as workdir:
            return run_pipelines(spark, workdir, rows, "spark-on-ray", reps)
    finally:
        ray_on_spark.stop_spark()
        ray.shutdown()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["ray-on-spark", "spark-on-ray", "both"], default="both")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=3, help="rounds of both ways, alternating which goes first")
    p.add_argument("--master", help="a Spark master for the Ray-on-Spark side (default: a local standalone cluster)")
    p.add_argument("--ray-nodes", type=int, default=1,
                   help="Ray worker nodes on Spark; each holds a Spark slot, so leave Spark at least one (default 1)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: Dict[str, object] = {}
    if args.mode in ("ray-on-spark", "both"):
        results["ray_on_spark"] = ray_on_spark_mode(args.rows, args.master, args.ray_nodes, args.reps)
    if args.mode in ("spark-on-ray", "both"):
        results["spark_on_ray"] = spark_on_ray_mode(args.rows, args.reps)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
