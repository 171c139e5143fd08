"""The RayDP 1.6.5 side of the start-up and conversion benchmarks.

Runs with the python of the RayDP venv (see ``raydp_venv.py``: pyspark 3.5, RayDP 1.6.5),
never with the main venv, and does not import ray_on_spark.  Both sides run the workloads in
``workloads.py``.  Each run starts its own local Ray (``ray.init``), and shuts it down at the
end whatever happens.

    PY=$(python benchmarks/raydp_venv.py)
    $PY benchmarks/raydp_side.py startup [--rows N]
    $PY benchmarks/raydp_side.py convert --rows N [--mixed]

Each prints a human line, then, as its last line, JSON:

* startup: init_s (``raydp.init_spark``), first_job_s, init_first_job_s, second_job_s,
  stop_s (``raydp.stop_spark``), peak_rss_mb (this process and all its descendants, sampled
  every 0.2 s over the whole run), raydp_version, pyspark_version, ray_version;
* convert: rows, bytes (Arrow size of the data), from_spark_s / from_spark_mb_s
  (``spark_dataframe_to_ray_dataset`` + materialising the dataset), to_spark_s /
  to_spark_mb_s (``ray_dataset_to_spark_dataframe`` + one Spark job that counts the rows
  and reads every value).  MB = 1e6 bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402

log = logging.getLogger("raydp_side")

OBJECT_STORE_MEMORY = 1 << 30
RAY_NUM_CPUS = 4

# JDK 17: RayDP starts JVMs that get none of the --add-opens list that spark-submit gives the
# pyspark driver: the AppMaster gateway (plain `java ...`) and the RayAppMaster and executor
# Ray Java actors.  Without them, init_spark and plain Spark jobs still work, but the first
# spark_dataframe_to_ray_dataset dies: the RayAppMaster actor cannot MessagePack-serialize its
# reply (InaccessibleObjectException: java.lang.String.value, "module java.base does not
# opens java.lang"), Ray's Java worker aborts ("Object at idx 0 was not stored") and
# prepareRecoverableRDD raises RayActorException.  spark.ray.raydp_app_master.extraJavaOptions
# is the key that reaches the AppMaster gateway and actor; the same options go to the driver and
# the executors (Arrow's direct buffers want java.nio / sun.nio.ch opened and netty's
# tryReflectionSetAccessible).  The list is Spark 3.5's JavaModuleOptions plus java.math /
# java.text, as in RayDP's own JDK 17 examples.
JDK17_JAVA_OPTIONS = " ".join(
    ["-XX:+IgnoreUnrecognizedVMOptions"]
    + [
        f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
        for pkg in (
            "java.lang",
            "java.lang.invoke",
            "java.lang.reflect",
            "java.io",
            "java.net",
            "java.nio",
            "java.math",
            "java.text",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "sun.nio.ch",
            "sun.nio.cs",
            "sun.security.action",
            "sun.util.calendar",
        )
    ]
    + ["-Djdk.reflect.useDirectMethodHandle=false", "-Dio.netty.tryReflectionSetAccessible=true"]
)


def spark_configs(jdk17_flags: bool = True) -> dict:
    configs = {
        "spark.ui.enabled": "false",
        # The executors' Python workers (mapInPandas in ray_dataset_to_spark_dataframe) must
        # run this venv's python, not whatever `python3` is first on PATH.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    if jdk17_flags:
        configs.update(
            {
                "spark.driver.extraJavaOptions": JDK17_JAVA_OPTIONS,
                "spark.executor.extraJavaOptions": JDK17_JAVA_OPTIONS,
                "spark.ray.raydp_app_master.extraJavaOptions": JDK17_JAVA_OPTIONS,
            }
        )
    return configs


class PeakRss:
    """Samples the RSS of this process plus all its descendants every ``interval`` s.

    Also remembers every descendant it saw, so that leftovers can be found after shutdown.
    """

    def __init__(self, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.seen: dict[int, float] = {}  # pid -> create_time
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def sample(self) -> None:
        total = 0
        try:
            procs = [self._me] + self._me.children(recursive=True)
        except self._psutil.Error:
            return
        for p in procs:
            try:
                total += p.memory_info().rss
                if p.pid != self._me.pid and p.pid not in self.seen:
                    self.seen[p.pid] = p.create_time()
            except self._psutil.Error:
                pass
        self.peak = max(self.peak, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def survivors(self) -> list:
        """Processes seen as descendants that are still alive (same pid and start time)."""
        out = []
        for pid, created in self.seen.items():
            try:
                p = self._psutil.Process(pid)
                if abs(p.create_time() - created) < 1e-3 and p.status() != "zombie":
                    out.append(p)
            except self._psutil.Error:
                pass
        return out


def _start(app_name: str, jdk17_flags: bool):
    import ray
    import raydp

    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    ray.init(
        num_cpus=RAY_NUM_CPUS,
        object_store_memory=OBJECT_STORE_MEMORY,
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    t0 = time.perf_counter()
    spark = raydp.init_spark(
        app_name=app_name,
        num_executors=workloads.NUM_EXECUTORS,
        executor_cores=workloads.EXECUTOR_CORES,
        executor_memory=workloads.EXECUTOR_MEMORY,
        configs=spark_configs(jdk17_flags),
    )
    return spark, time.perf_counter() - t0


def _shutdown(rss: PeakRss, failed: bool) -> None:
    """Stop Spark and Ray; end whatever this run started that is still alive."""
    import ray

    if failed:
        # Py4JJavaError needs the JVM to render its message: log it before the JVM goes.
        log.error("run failed:\n%s", traceback.format_exc())

    try:
        import raydp

        raydp.stop_spark()
    except Exception:  # already stopped, or never started
        pass
    ray.shutdown()
    # pyspark keeps its driver JVM (the py4j gateway) for the life of the Python process,
    # even after SparkContext.stop(); end it here so that the check below sees real leftovers.
    try:
        from pyspark import SparkContext

        gw = SparkContext._gateway
        if gw is not None:
            proc = getattr(gw, "proc", None)
            gw.shutdown()
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
            SparkContext._gateway = None
            SparkContext._jvm = None
    except Exception as e:  # best effort
        log.info("closing the pyspark gateway JVM: %s", e)
    deadline = time.monotonic() + 10
    left = rss.survivors()
    while left and time.monotonic() < deadline:
        time.sleep(0.25)
        left = rss.survivors()
    for p in left:
        log.warning("still alive after ray.shutdown, terminating: %s %s", p.pid, p.name())
        try:
            p.terminate()
        except Exception:
            pass
    if left:
        import psutil

        _, alive = psutil.wait_procs(left, timeout=5)
        for p in alive:
            try:
                p.kill()
            except Exception:
                pass


def cmd_startup(args) -> dict:
    from importlib.metadata import version

    import pyspark
    import ray
    import raydp

    rss = PeakRss()
    with rss:
        try:
            spark, init_s = _start("raydp-bench-startup", not args.no_jdk17_flags)
            t0 = time.perf_counter()
            workloads.job(spark, args.rows)
            first_job_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            workloads.job(spark, args.rows)
            second_job_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            raydp.stop_spark()
            stop_s = time.perf_counter() - t0
        except BaseException:
            _shutdown(rss, failed=True)
            raise
        else:
            _shutdown(rss, failed=False)
    out = {
        "init_s": round(init_s, 3),
        "first_job_s": round(first_job_s, 3),
        "init_first_job_s": round(init_s + first_job_s, 3),
        "second_job_s": round(second_job_s, 3),
        "stop_s": round(stop_s, 3),
        "peak_rss_mb": round(rss.peak / 2**20, 1),
        "raydp_version": version("raydp"),
        "pyspark_version": pyspark.__version__,
        "ray_version": ray.__version__,
    }
    print(
        f"RayDP {out['raydp_version']} (pyspark {out['pyspark_version']}, ray {out['ray_version']}): "
        f"init_spark {init_s:.2f} s + first job {first_job_s:.2f} s = {init_s + first_job_s:.2f} s, "
        f"second job {second_job_s:.2f} s, stop_spark {stop_s:.2f} s, peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    return out


def _full_pass_exprs(mixed: bool) -> list[str]:
    """One aggregate per column, so that the job reads every value, plus a row count."""
    if not mixed:
        return ["count(1) AS n", "sum(a) AS s"]
    return [
        "count(1) AS n",
        "sum(i32)",
        "sum(i64)",
        "sum(f64)",
        "sum(dec)",
        "sum(length(s))",
        "sum(CAST(b AS INT))",
        "max(d)",
        "max(ts)",
    ]


def cmd_convert(args) -> dict:
    import raydp

    rows = args.rows
    rss = PeakRss()
    with rss:
        try:
            spark, _ = _start("raydp-bench-convert", not args.no_jdk17_flags)
            make = workloads.mixed_frame if args.mixed else workloads.int64_frame
            df = make(spark, rows).cache()
            assert df.count() == rows  # generate and cache it before timing

            # Spark -> Ray: conversion plus materialising every block in Ray's object store.
            t0 = time.perf_counter()
            ds = raydp.spark.spark_dataframe_to_ray_dataset(df)
            ds = ds.materialize()
            from_spark_s = time.perf_counter() - t0
            got = ds.count()
            assert got == rows, (got, rows)
            nbytes = rows * 8 if not args.mixed else int(ds.size_bytes())

            # Ray -> Spark: conversion plus one job that counts and reads every value.
            # (Ray's own Dataset.to_spark does exactly this call with the same arguments.)
            schema = ds.schema()
            schema = getattr(schema, "base_schema", schema)
            blocks = ds.to_arrow_refs()
            t0 = time.perf_counter()
            df2 = raydp.spark.ray_dataset_to_spark_dataframe(spark, schema, blocks)
            res = df2.selectExpr(*_full_pass_exprs(args.mixed)).collect()[0]
            to_spark_s = time.perf_counter() - t0
            assert res["n"] == rows, (res["n"], rows)
            if not args.mixed:
                assert res["s"] == rows * (rows - 1) // 2, res["s"]
        except BaseException:
            _shutdown(rss, failed=True)
            raise
        else:
            _shutdown(rss, failed=False)
    mb = nbytes / 1e6
    out = {
        "rows": rows,
        "bytes": nbytes,
        "from_spark_s": round(from_spark_s, 3),
        "from_spark_mb_s": round(mb / from_spark_s, 2),
        "to_spark_s": round(to_spark_s, 3),
        "to_spark_mb_s": round(mb / to_spark_s, 2),
    }
    print(
        f"RayDP {'mixed' if args.mixed else 'int64'} {rows} rows ({mb:.1f} MB): "
        f"Spark->Ray {from_spark_s:.2f} s ({out['from_spark_mb_s']:.1f} MB/s), "
        f"Ray->Spark+pass {to_spark_s:.2f} s ({out['to_spark_mb_s']:.1f} MB/s)"
    )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--no-jdk17-flags",
        action="store_true",
        help="leave out the --add-opens JVM options (to see what JDK 17 does without them)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("startup", help="init_spark, two jobs, stop_spark")
    s.add_argument("--rows", type=int, default=10_000_000, help="rows of each job")
    c = sub.add_parser("convert", help="Spark -> Ray Dataset -> Spark throughput")
    c.add_argument("--rows", type=int, required=True)
    c.add_argument("--mixed", action="store_true", help="the mixed-type table, not one int64 column")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    out = cmd_startup(args) if args.cmd == "startup" else cmd_convert(args)
    sys.stdout.flush()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
