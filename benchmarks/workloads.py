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
