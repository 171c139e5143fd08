"""JIT thresholds for the Spark JVMs that ``init_spark`` starts (its driver JVM and executors).

Why: when a Spark-on-Ray session starts, three fresh JVMs (driver and two executors on a
small host) warm up at once, and HotSpot's C2 compiler threads are the largest consumer
of CPU: measured on 2 cores, 5.4 CPU-s in the driver and 3.3 in each executor up to the
first job's end, of about 23 CPU-s in all. Most of those C2 compilations are of
code that is hot only while the JVM starts (class loading, Spark's and Scala's
initialisation), so they cost time exactly when the cores are busiest and pay off
never.

Raising the tier-4 (C2) thresholds tenfold leaves that code in C1, while the code that
stays hot (a job's row loops run millions of times; the driver's planner in a long
session) crosses them within milliseconds and still gets C2. Measured with
``benchmarks/spark_on_ray.py`` workloads: ``init_spark`` + first job 11.7 s -> 9.3 s, while
the warm shuffle job, a warm join and the warm planning of a 150-column query are
unchanged (README, "Start-up speed").

The options go before the user's ``spark.driver.extraJavaOptions`` /
``spark.executor.extraJavaOptions``, so a user's own ``-XX:Tier4...`` wins (HotSpot takes
the last occurrence). ``RAY_ON_SPARK_JIT_TUNING=0`` leaves HotSpot's defaults.
"""

from __future__ import annotations

from typing import List

from ray_on_spark.runtime.switches import switched_on

ENV_SWITCH = "RAY_ON_SPARK_JIT_TUNING"
#: HotSpot's tier-4 thresholds, 10x their defaults (5000, 600, 15000, 40000 in JDK 17-25).
TIER4_THRESHOLDS = (
    "-XX:Tier4InvocationThreshold=50000",
    "-XX:Tier4MinInvocationThreshold=6000",
    "-XX:Tier4CompileThreshold=150000",
    "-XX:Tier4BackEdgeThreshold=400000",
)


def enabled() -> bool:
    """False when the user turned the tuning off (``RAY_ON_SPARK_JIT_TUNING=0``)."""
    return switched_on(ENV_SWITCH)


def startup_options() -> List[str]:
    """The JVM options for a JVM that ``init_spark`` starts; empty when turned off."""
    return list(TIER4_THRESHOLDS) if enabled() else []
