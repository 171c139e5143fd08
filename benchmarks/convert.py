"""Spark DataFrame <-> Ray Dataset throughput: ray_on_spark vs the driver path vs RayDP 1.6.5.

One run, on Spark on Ray (``init_spark``, 2 executors x 1 core x 1 GB, local Ray with 4
CPUs), with the workloads of ``workloads.py``:

* ours, Spark -> Ray : ``from_spark(df)`` (each executor JVM writes its partitions as Arrow stream
                       files in /dev/shm, and its node's block owner puts them into the object
                       store); also its fallback path through Python workers
                       (``RAY_ON_SPARK_ARROW_FILES=0``);
* ours, Ray -> Spark : ``to_spark(ds, spark)`` plus one job that counts and reads every value;
* driver path        : ``df.toArrow()`` (``_collect_as_arrow``) -> ``ray.data.from_arrow``, and back with
                       ``spark.createDataFrame(arrow_table)`` plus the same job;
* floors             : Spark's own row-wise Arrow encoding of every partition with nothing leaving
                       the JVM, and the same handed to Python workers that drop it: driver_from_s
                       over each is the most any Spark -> Ray path built on them can beat the
                       driver path by on this machine (from_spark copies a columnar source -- the
                       cached int64 table, a Parquet read -- column by column instead);
* RayDP (``--raydp``): ``spark_dataframe_to_ray_dataset`` / ``ray_dataset_to_spark_dataframe``
                       in its own venv (``raydp_side.py convert``).

The DataFrame is generated and cached before timing; the mixed table is also written to
Parquet and read back (not cached), so every run of every side reads the files.  Our and the driver's figures are the
median of ``--reps`` warm runs after two untimed ones (the first, cold conversion is reported apart: it compiles
the JVM writer, the executors fetch it, the block owner starts); RayDP's is its single run.  The driver's peak RSS
growth during our two conversions is measured in a separate process at ``--rss-rows`` rows
(default 10**8, 800 MB).  MB = 1e6 bytes.  Last line: JSON with ``from_spark_mb_s``,
``to_spark_mb_s``, ``driver_from_mb_s``, ``driver_to_mb_s``, ``driver_rss_growth_mb_at_1e8``.

    .venv/bin/python benchmarks/convert.py --rows 10000000 --raydp
    .venv/bin/python benchmarks/convert.py --rows 10000000 --raydp --spark35   # + ours on pyspark 3.5.7

``--spark35`` also runs ours and the driver path on pyspark 3.5.7 in RayDP's venv
(``raydp_venv.py``): ours against RayDP on the same pyspark, and ours on 3.5 against ours on 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402

FULL_PASS = {
    False: ["count(1) AS n", "sum(a) AS s"],
    True: ["count(1) AS n", "sum(i32)", "sum(i64)", "sum(f64)", "sum(dec)", "sum(length(s))", "sum(CAST(b AS INT))",
           "max(d)", "max(ts)"],
}


class DriverPeak:
    """Peak RSS of this process only (the driver), sampled every 50 ms."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def growth_mb(self) -> float:
        return round((self.peak - self.base) / 2**20, 1)


def _start(object_store: int):
    import ray

    import ray_on_spark

    ray.init(num_cpus=4, object_store_memory=object_store, include_dashboard=False, logging_level=logging.WARNING)
    return ray_on_spark.init_spark("bench-convert", num_executors=workloads.NUM_EXECUTORS,
                                   executor_cores=workloads.EXECUTOR_CORES, executor_memory=workloads.EXECUTOR_MEMORY)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def side_ours(rows: int, reps: int, mixed: bool, parquet: bool = False) -> dict:
    """Ours and the driver path, in this process; warm medians plus the cold first run.

    The DataFrame is cached in Spark, or with ``parquet`` written to a Parquet dir and read
    back (every run then reads the files, on every side).
    """
    import ray

    import ray_on_spark
    from ray_on_spark.data import jvm_writer
    from ray_on_spark.data.spark_arrow import arrow_batches, columnar_source

    spark = _start(1 << 30)
    tmp = tempfile.mkdtemp(prefix="ros-bench-parquet-")
    try:
        make = workloads.mixed_frame if mixed else workloads.int64_frame
        if parquet:
            make(spark, rows).write.parquet(os.path.join(tmp, "t"))
            df = spark.read.parquet(os.path.join(tmp, "t"))
        else:
            df = make(spark, rows).cache()
        assert df.count() == rows
        # which Spark -> Ray encoding from_spark uses: column by column, or Spark's row-wise one
        path = "columnar" if columnar_source(df) is not None else "row-wise"
        exprs = FULL_PASS[mixed]
        nbytes = None

        def ours_from():
            ds = ray_on_spark.from_spark(df)
            assert ds.count() == rows
            return ds

        def ours_to(ds):
            res = ray_on_spark.to_spark(ds, spark).selectExpr(*exprs).collect()[0]
            assert res["n"] == rows
            return res

        def driver_from():
            ds = ray.data.from_arrow(_to_arrow(df)).materialize()  # pyspark's _collect_as_arrow, as one table
            assert ds.count() == rows
            return ds

        def driver_to(ds):
            table = ray.data.Dataset.to_arrow_refs(ds)
            import pyarrow as pa

            arrow = pa.concat_tables(ray.get(table))
            res = _from_arrow(spark, arrow).selectExpr(*exprs).collect()[0]
            assert res["n"] == rows
            return res


        def encode_only():  # executors encode every partition (from_spark's batches); nothing leaves the JVM
            arrow_batches(df)._jrdd.count()

        def to_python_only():  # ... and hand every batch to a Python worker, which drops it
            arrow_batches(df).mapPartitions(lambda it: [sum(len(m) for m in it)]).collect()

        def ours_from_via_python():  # from_spark's fallback path
            os.environ[jvm_writer.ENV] = "0"
            try:
                return ours_from()
            finally:
                del os.environ[jvm_writer.ENV]

        cold_from, ds = _timed(ours_from)
        cold_to, _ = _timed(lambda: ours_to(ds))
        nbytes = rows * 8 if not mixed else int(ds.size_bytes())
        _timed(driver_from)  # the driver path's own first (cold) run, not counted
        runs = {"from": [], "to": [], "dfrom": [], "dto": [], "encode": [], "python": [], "from_py": []}
        _timed(encode_only)
        _timed(to_python_only)
        _timed(ours_from_via_python)
        for _ in range(2):  # one more untimed round of each side, so every code path is as warm as the others
            ours_to(ours_from())
            driver_to(driver_from())
        for _ in range(reps):
            runs["encode"].append(_timed(encode_only)[0])
            runs["python"].append(_timed(to_python_only)[0])
            runs["from_py"].append(_timed(ours_from_via_python)[0])
            t, ds = _timed(ours_from)
            runs["from"].append(t)
            runs["to"].append(_timed(lambda: ours_to(ds))[0])
            t, dds = _timed(driver_from)
            runs["dfrom"].append(t)
            runs["dto"].append(_timed(lambda: driver_to(dds))[0])
        mb = nbytes / 1e6
        med = {k: statistics.median(v) for k, v in runs.items()}
        return {
            "rows": rows, "bytes": nbytes, "mixed": mixed, "parquet": parquet, "from_spark_encoding": path,
            "from_spark_s": round(med["from"], 3), "from_spark_mb_s": round(mb / med["from"], 1),
            "to_spark_s": round(med["to"], 3), "to_spark_mb_s": round(mb / med["to"], 1),
            "driver_from_s": round(med["dfrom"], 3), "driver_from_mb_s": round(mb / med["dfrom"], 1),
            "driver_to_s": round(med["dto"], 3), "driver_to_mb_s": round(mb / med["dto"], 1),
            "cold_from_spark_mb_s": round(mb / cold_from, 1), "cold_to_spark_mb_s": round(mb / cold_to, 1),
            "spark_arrow_encode_s": round(med["encode"], 3), "spark_arrow_encode_mb_s": round(mb / med["encode"], 1),
            "to_python_workers_s": round(med["python"], 3), "to_python_workers_mb_s": round(mb / med["python"], 1),
            "from_spark_via_python_s": round(med["from_py"], 3),
            "from_spark_via_python_mb_s": round(mb / med["from_py"], 1),
        }
    finally:
        ray_on_spark.stop_spark()
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _to_arrow(df):
    """``df.toArrow()`` (pyspark 4); on pyspark 3.5 the private method it wraps, with the same schema."""
    import pyarrow as pa

    from ray_on_spark import spark_env

    if hasattr(df, "toArrow"):
        return df.toArrow()
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone")
    return pa.Table.from_batches(df._collect_as_arrow(), schema=spark_env.arrow_schema(df.schema, tz, False))


def _from_arrow(spark, table):
    """``spark.createDataFrame(table)`` (pyspark 4 takes an Arrow table); on 3.5 through pandas, with Arrow on."""
    from pyspark.sql import DataFrame

    if hasattr(DataFrame, "toArrow"):  # pyspark 4: Arrow in, Arrow out
        return spark.createDataFrame(table)
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    return spark.createDataFrame(table.to_pandas())


def side_rss(rows: int) -> dict:
    """The driver's peak RSS growth while ours converts ``rows`` int64 rows both ways."""
    import ray

    import ray_on_spark

    spark = _start(int(rows * 8 * 2.5))  # the Dataset, plus room for each block's transient copy
    try:
        df = workloads.int64_frame(spark, rows, partitions=64)
        warm = ray_on_spark.from_spark(workloads.int64_frame(spark, 1000))
        ray_on_spark.to_spark(warm, spark).count()
        with DriverPeak() as peak:
            t, ds = _timed(lambda: ray_on_spark.from_spark(df))
            assert ds.count() == rows
            t2, res = _timed(lambda: ray_on_spark.to_spark(ds, spark).selectExpr("count(1) AS n", "sum(a) AS s").collect()[0])
            assert res["n"] == rows and res["s"] == rows * (rows - 1) // 2
        return {"rows": rows, "driver_rss_growth_mb": peak.growth_mb,
                "from_spark_mb_s": round(rows * 8 / 1e6 / t, 1), "to_spark_mb_s": round(rows * 8 / 1e6 / t2, 1)}
    finally:
        ray_on_spark.stop_spark()
        ray.shutdown()


def _run(cmd: list, timeout: int = 1800) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--mixed-rows", type=int, default=1_000_000)
    p.add_argument("--rss-rows", type=int, default=100_000_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--raydp", action="store_true", help="also run RayDP 1.6.5 (separate venv)")
    p.add_argument("--spark35", action="store_true",
                   help="also run ours and the driver path on pyspark 3.5.7, in the RayDP venv")
    p.add_argument("--side", choices=["ours", "rss"], help=argparse.SUPPRESS)
    p.add_argument("--mixed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--parquet", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.side == "ours":
        print(json.dumps(side_ours(args.rows, args.reps, args.mixed, args.parquet)))
        return 0
    if args.side == "rss":
        print(json.dumps(side_rss(args.rows)))
        return 0
    me = [sys.executable, os.path.abspath(__file__)]
    int64 = _run(me + ["--side", "ours", "--rows", str(args.rows), "--reps", str(args.reps)])
    print("ours + driver path, int64:", int64, flush=True)
    mixed = _run(me + ["--side", "ours", "--rows", str(args.mixed_rows), "--reps", str(args.reps), "--mixed"])
    print("ours + driver path, mixed:", mixed, flush=True)
    parquet = _run(me + ["--side", "ours", "--rows", str(args.mixed_rows), "--reps", str(args.reps), "--mixed",
                         "--parquet"])
    print("ours + driver path, mixed from Parquet:", parquet, flush=True)
    rss7 = _run(me + ["--side", "rss", "--rows", str(args.rows)])
    print("driver RSS at", args.rows, ":", rss7, flush=True)
    rss8 = _run(me + ["--side", "rss", "--rows", str(args.rss_rows)])
    print("driver RSS at", args.rss_rows, ":", rss8, flush=True)
    raydp = raydp_mixed = int64_35 = mixed_35 = None
    if args.raydp or args.spark35:
        from raydp_venv import ensure_raydp_venv

        py = ensure_raydp_venv(with_ours=args.spark35)
    if args.spark35:
        me35 = [py, os.path.abspath(__file__)]
        int64_35 = _run(me35 + ["--side", "ours", "--rows", str(args.rows), "--reps", str(args.reps)])
        print("ours + driver path on pyspark 3.5.7, int64:", int64_35, flush=True)
        mixed_35 = _run(me35 + ["--side", "ours", "--rows", str(args.mixed_rows), "--reps", str(args.reps), "--mixed"])
        print("ours + driver path on pyspark 3.5.7, mixed:", mixed_35, flush=True)
    if args.raydp:
        raydp = _run([py, os.path.join(HERE, "raydp_side.py"), "convert", "--rows", str(args.rows)])
        print("RayDP int64:", raydp, flush=True)
        raydp_mixed = _run([py, os.path.join(HERE, "raydp_side.py"), "convert", "--rows", str(args.mixed_rows), "--mixed"])
        print("RayDP mixed:", raydp_mixed, flush=True)

    print(f"\n{'MB/s':<28}{'Spark->Ray':>12}{'Ray->Spark':>12}")
    rows_out = [("ours (warm)", int64["from_spark_mb_s"], int64["to_spark_mb_s"]),
                ("ours (cold, first call)", int64["cold_from_spark_mb_s"], int64["cold_to_spark_mb_s"]),
                ("ours via Python workers", int64["from_spark_via_python_mb_s"], "-"),
                ("driver path", int64["driver_from_mb_s"], int64["driver_to_mb_s"])]
    if int64_35:
        rows_out += [("ours on 3.5.7 (warm)", int64_35["from_spark_mb_s"], int64_35["to_spark_mb_s"]),
                     ("driver path on 3.5.7", int64_35["driver_from_mb_s"], int64_35["driver_to_mb_s"])]
    if raydp:
        rows_out.append(("RayDP 1.6.5 (on 3.5.7)", raydp["from_spark_mb_s"], raydp["to_spark_mb_s"]))
    rows_out += [("ours, mixed (warm)", mixed["from_spark_mb_s"], mixed["to_spark_mb_s"]),
                 ("driver path, mixed", mixed["driver_from_mb_s"], mixed["driver_to_mb_s"]),
                 ("ours, mixed from Parquet", parquet["from_spark_mb_s"], parquet["to_spark_mb_s"]),
                 ("driver path, from Parquet", parquet["driver_from_mb_s"], parquet["driver_to_mb_s"])]
    if mixed_35:
        rows_out += [("ours on 3.5.7, mixed", mixed_35["from_spark_mb_s"], mixed_35["to_spark_mb_s"]),
                     ("driver on 3.5.7, mixed", mixed_35["driver_from_mb_s"], mixed_35["driver_to_mb_s"])]
    if raydp_mixed:
        rows_out.append(("RayDP 1.6.5, mixed", raydp_mixed["from_spark_mb_s"], raydp_mixed["to_spark_mb_s"]))
    for name, a, b in rows_out:
        print(f"{name:<28}{a:>12}{b:>12}")
    ceiling = round(int64["driver_from_s"] / int64["spark_arrow_encode_s"], 2)
    py_ceiling = round(int64["driver_from_s"] / int64["to_python_workers_s"], 2)
    print(f"\nfrom_spark's encoding: int64 {int64['from_spark_encoding']}, mixed {mixed['from_spark_encoding']}, "
          f"mixed from Parquet {parquet['from_spark_encoding']}.")
    print(f"Spark->Ray, int64 (s): Spark's row-wise Arrow encoding alone {int64['spark_arrow_encode_s']}; "
          f"+ hand-over to Python workers {int64['to_python_workers_s']}; from_spark {int64['from_spark_s']} "
          f"(via Python workers {int64['from_spark_via_python_s']}); "
          f"driver path {int64['driver_from_s']}.\nSo no path built on Spark's row-wise encoding can beat the "
          f"driver path by more than {ceiling}x here, and none through Python workers by more than {py_ceiling}x.")
    result = {
        "rows": args.rows,
        "from_spark_mb_s": int64["from_spark_mb_s"], "to_spark_mb_s": int64["to_spark_mb_s"],
        "driver_from_mb_s": int64["driver_from_mb_s"], "driver_to_mb_s": int64["driver_to_mb_s"],
        "from_ratio_vs_driver": round(int64["from_spark_mb_s"] / int64["driver_from_mb_s"], 2),
        "from_spark_via_python_mb_s": int64["from_spark_via_python_mb_s"],
        "mixed_from_ratio_vs_driver": round(mixed["from_spark_mb_s"] / mixed["driver_from_mb_s"], 2),
        "to_ratio_vs_driver": round(int64["to_spark_mb_s"] / int64["driver_to_mb_s"], 2),
        "cold_from_spark_mb_s": int64["cold_from_spark_mb_s"], "cold_to_spark_mb_s": int64["cold_to_spark_mb_s"],
        "spark_arrow_encode_mb_s": int64["spark_arrow_encode_mb_s"], "from_ratio_ceiling_vs_driver": ceiling,
        "to_python_workers_mb_s": int64["to_python_workers_mb_s"], "from_ratio_ceiling_via_python_vs_driver": py_ceiling,
        "mixed_from_spark_mb_s": mixed["from_spark_mb_s"], "mixed_to_spark_mb_s": mixed["to_spark_mb_s"],
        "parquet_mixed_from_ratio_vs_driver": round(parquet["from_spark_mb_s"] / parquet["driver_from_mb_s"], 2),
        "parquet_mixed_to_ratio_vs_driver": round(parquet["to_spark_mb_s"] / parquet["driver_to_mb_s"], 2),
        "from_spark_encoding": int64["from_spark_encoding"],
        "driver_rss_growth_mb_at_1e7": rss7["driver_rss_growth_mb"],
        "driver_rss_growth_mb_at_1e8": rss8["driver_rss_growth_mb"],
    }
    if raydp:
        result.update({"raydp_from_spark_mb_s": raydp["from_spark_mb_s"], "raydp_to_spark_mb_s": raydp["to_spark_mb_s"]})
    if int64_35:
        result.update({
            "spark35_from_spark_mb_s": int64_35["from_spark_mb_s"], "spark35_to_spark_mb_s": int64_35["to_spark_mb_s"],
            "spark35_from_ratio_vs_driver": round(int64_35["from_spark_mb_s"] / int64_35["driver_from_mb_s"], 2),
            "spark35_to_ratio_vs_driver": round(int64_35["to_spark_mb_s"] / int64_35["driver_to_mb_s"], 2),
            "spark35_mixed_from_spark_mb_s": mixed_35["from_spark_mb_s"],
            "spark35_mixed_to_spark_mb_s": mixed_35["to_spark_mb_s"],
        })
        if raydp:  # ours and RayDP on the same pyspark 3.5.7
            result["spark35_from_ratio_vs_raydp"] = round(int64_35["from_spark_mb_s"] / raydp["from_spark_mb_s"], 2)
            result["spark35_to_ratio_vs_raydp"] = round(int64_35["to_spark_mb_s"] / raydp["to_spark_mb_s"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
