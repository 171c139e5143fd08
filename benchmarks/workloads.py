"""The workloads the Spark-on-Ray and conversion benchmarks run, shared by both sides.

Imported by ``spark_on_ray.py`` / ``convert.py`` (pyspark 4, ray_on_spark) and by
``raydp_side.py`` (pyspark 3.5, RayDP 1.6.5, in its own venv), so both libraries run
exactly the same queries.  Only pyspark APIs common to 3.5 and 4.x are used.
"""

from __future__ import annotations

# The cluster both sides ask Ray for.
NUM_EXECUTORS = 2
EXECUTOR_CORES = 1
EXECUTOR_MEMORY = "1GB"


def job(spark, rows: int = 10_000_000) -> int:
    """One shuffle job: group ``rows`` ids into 1000 keys and sum them; returns the key count."""
    df = spark.range(0, rows, numPartitions=4).selectExpr("id % 1000 AS k", "id AS v")
    return len(df.groupBy("k").sum("v").collect())


def int64_frame(spark, rows: int, partitions: int = 4):
    """``rows`` int64 values in one column: 8 bytes a row (80 MB at 10**7 rows)."""
    return spark.range(0, rows, numPartitions=partitions).selectExpr("id AS a")


def mixed_frame(spark, rows: int, partitions: int = 4):
    """A mixed-type table: ints, double, decimal, string, bool, date, timestamp."""
    return spark.range(0, rows, numPartitions=partitions).selectExpr(
        "CAST(id AS INT) AS i32",
        "id AS i64",
        "CAST(id AS DOUBLE) / 3 AS f64",
        "CAST(id AS DECIMAL(18, 2)) AS dec",
        "CONCAT('row-', CAST(id AS STRING)) AS s",
        "id % 2 = 0 AS b",
        "DATE_ADD(DATE'2020-01-01', CAST(id % 1000 AS INT)) AS d",
        "TIMESTAMP_SECONDS(id) AS ts",
    )


def warm_figures(spark, rows: int = 10_000_000, reps: int = 6) -> dict:
    """Steady-state figures of a warmed-up session: does start-up tuning cost later speed?

    * ``warm_job_s``  -- best of ``reps`` runs of :func:`job`;
    * ``warm_join_s`` -- best of ``reps`` string-keyed joins + aggregation (3*10**6 x 5000 rows);
    * ``warm_plan_s`` -- the driver planning a 150-column query, mean of its last 5 of 15 times.
    """
    import time

    def best(fn) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(min(times), 3)

    def join():
        a = spark.range(0, 3_000_000, numPartitions=4).selectExpr(
            "id", "concat('k', CAST(id % 5000 AS STRING)) AS s", "CAST(id AS DOUBLE) * 1.5 AS f")
        b = spark.range(5000).selectExpr("concat('k', CAST(id AS STRING)) AS s", "id * 2 AS x")
        a.join(b, "s").groupBy((a.id % 100).alias("g")).agg({"f": "avg", "x": "max"}).collect()

    cols = [f"CASE WHEN id % {i + 2} = 0 THEN id * {i} ELSE id + {i} END AS c{i}" for i in range(150)]
    plans = []
    for _ in range(15):
        t0 = time.perf_counter()
        df = spark.range(100).selectExpr(*cols).filter("c1 > 3").groupBy("c2").agg({f"c{i}": "sum" for i in range(3, 150)})
        df._jdf.queryExecution().executedPlan()
        plans.append(time.perf_counter() - t0)
    return {"warm_job_s": best(lambda: job(spark, rows)), "warm_join_s": best(join),
            "warm_plan_s": round(sum(plans[-5:]) / 5, 3)}
