"""Spark on Ray start-up: ray_on_spark.init_spark vs RayDP 1.6.5, in one run.

Each side runs in a fresh Python process of its own (so each pays for its driver JVM) with
a local Ray of 4 CPUs and a 1 GiB object store, 2 executors x 1 core x 1 GB, and the
workloads of ``workloads.py``:

* init_s        -- ``init_spark(...)`` until it returns;
* first_job_s   -- the first shuffle job (10**7 rows into 1000 keys), right after;
* second_job_s  -- the same job again (warm);
* stop_s        -- ``stop_spark()``;
* peak_rss_mb   -- this process and all its descendants (Ray included), sampled every 0.2 s.

Ours first runs one "first session on this host" with an empty cache (it records its
JVMs' classes and builds the class-data archives of ``ray_on_spark.on_ray.cds`` at exit), reported
on its own; the measured reps then start from those archives, as every later session on a
host does.  RayDP runs with ``--raydp`` in its own venv (pyspark 3.5; created on first use,
see ``raydp_venv.py``).  Sides alternate ``--reps`` times; medians are reported.  The last line
is JSON with ``ours_init_first_job_s``, ``raydp_init_first_job_s`` and ``ratio``.

    .venv/bin/python benchmarks/spark_on_ray.py --raydp --reps 3
    .venv/bin/python benchmarks/spark_on_ray.py --raydp --spark35 --reps 3   # + ours on pyspark 3.5.7

``--spark35`` also runs ours on pyspark 3.5.7 in RayDP's venv (``raydp_venv.py``), so that ours
and RayDP compare on the same pyspark; ``ratio_on_spark35`` is that ratio.

``--jit-check`` instead runs ours with and without ``ray_on_spark.on_ray.jit``'s tuning and adds
warm (steady-state) figures, to show that the faster start costs no later speed.
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402


def ours(rows: int, warm: bool = False) -> dict:
    """One run of ray_on_spark's RayDP mode in this process."""
    import ray
    from raydp_side import PeakRss  # the same sampler as the RayDP side

    import ray_on_spark

    rss = PeakRss()
    with rss:
        ray.init(num_cpus=4, object_store_memory=1 << 30, include_dashboard=False, logging_level=logging.WARNING)
        try:
            t0 = time.perf_counter()
            spark = ray_on_spark.init_spark(
                "bench", num_executors=workloads.NUM_EXECUTORS, executor_cores=workloads.EXECUTOR_CORES,
                executor_memory=workloads.EXECUTOR_MEMORY,
            )
            init_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            workloads.job(spark, rows)
            first_job_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            workloads.job(spark, rows)
            second_job_s = time.perf_counter() - t0
            figures = workloads.warm_figures(spark, rows) if warm else {}
            t0 = time.perf_counter()
            ray_on_spark.stop_spark()
            stop_s = time.perf_counter() - t0
        finally:
            ray_on_spark.stop_spark()
            ray.shutdown()
    return {
        "init_s": round(init_s, 3), "first_job_s": round(first_job_s, 3),
        "init_first_job_s": round(init_s + first_job_s, 3), "second_job_s": round(second_job_s, 3),
        "stop_s": round(stop_s, 3), "peak_rss_mb": round(rss.peak / 2**20, 1), **figures,
    }


def _run_side(cmd: list, env: dict = None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def _print_table(reps: int, keys: list, rows: list) -> None:
    """One line per (label, figures): the figures under ``keys``, in columns."""
    print(f"\n{'(medians of ' + str(reps) + ')':<22}" + "".join(f"{k:>18}" for k in keys))
    for label, figures in rows:
        print(f"{label:<22}" + "".join(f"{figures[k]:>18}" for k in keys))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raydp", action="store_true", help="also run RayDP 1.6.5 (separate venv)")
    p.add_argument("--spark35", action="store_true",
                   help="also run ours on pyspark 3.5.7, in the RayDP venv (RayDP's own pyspark)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--jit-check", action="store_true",
                   help="instead: ours with and without ray_on_spark.on_ray.jit's tuning, start-up and warm figures")
    p.add_argument("--side", choices=["ours"], help=argparse.SUPPRESS)  # internal: one run, JSON out
    p.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)  # internal: add warm figures
    args = p.parse_args(argv)
    if args.side == "ours":
        print(json.dumps(ours(args.rows, args.warm)))
        return 0
    if args.jit_check:
        return jit_check(args.reps, args.rows)
    raydp_python = None
    if args.raydp or args.spark35:
        from raydp_venv import ensure_raydp_venv

        raydp_python = ensure_raydp_venv(with_ours=args.spark35)
    runs = {"ours": [], "ours_spark35": [], "raydp": []}
    ours_cmd = [sys.executable, os.path.abspath(__file__), "--side", "ours", "--rows", str(args.rows)]
    ours35_cmd = [raydp_python or "", *ours_cmd[1:]]
    # Our JVMs start from class-data archives (ray_on_spark.on_ray.cds) that the first session on a
    # host records and builds. Measure that first session on its own, with an empty cache, then
    # run the measured reps against the archives it left. The user's ~/.cache is not touched.
    cache = tempfile.mkdtemp(prefix="ros-bench-cache-")
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    try:
        t0 = time.perf_counter()
        first = _run_side(ours_cmd, env)
        first["incl_archive_build_s"] = round(time.perf_counter() - t0, 1)
        print(f"first session on this host (no archive yet; builds it at exit): {first}", flush=True)
        if args.spark35:  # pyspark 3.5's jars have archives of their own: the first session builds them
            print(f"first session on pyspark 3.5.7: {_run_side(ours35_cmd, env)}", flush=True)
        for rep in range(args.reps):
            runs["ours"].append(_run_side(ours_cmd, env))
            print(f"rep {rep + 1} ours : {runs['ours'][-1]}", flush=True)
            if args.spark35:
                runs["ours_spark35"].append(_run_side(ours35_cmd, env))
                print(f"rep {rep + 1} ours on pyspark 3.5.7: {runs['ours_spark35'][-1]}", flush=True)
            if args.raydp:
                runs["raydp"].append(_run_side([raydp_python, os.path.join(HERE, "raydp_side.py"), "startup",
                                                "--rows", str(args.rows)]))
                print(f"rep {rep + 1} raydp: {runs['raydp'][-1]}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    def med(side: str, key: str):
        vals = [r[key] for r in runs[side]]
        return round(statistics.median(vals), 2) if vals else None

    keys = ["init_s", "first_job_s", "init_first_job_s", "second_job_s", "stop_s", "peak_rss_mb"]
    table = [(side, {k: med(side, k) for k in keys}) for side in ("ours", "ours_spark35", "raydp") if runs[side]]
    _print_table(args.reps, keys, table + [("ours, first on host", first)])
    result = {f"ours_{k}": med("ours", k) for k in keys}
    result["ours_first_session_on_host_init_first_job_s"] = first["init_first_job_s"]
    if runs["raydp"]:
        result.update({f"raydp_{k}": med("raydp", k) for k in keys})
        result["ratio"] = round(result["ours_init_first_job_s"] / result["raydp_init_first_job_s"], 2)
    if runs["ours_spark35"]:
        result.update({f"ours_spark35_{k}": med("ours_spark35", k) for k in keys})
        if runs["raydp"]:  # both on pyspark 3.5.7
            result["ratio_on_spark35"] = round(result["ours_spark35_init_first_job_s"]
                                               / result["raydp_init_first_job_s"], 2)
    print(json.dumps(result))
    return 0


def jit_check(reps: int, rows: int) -> int:
    """Ours with RAY_ON_SPARK_JIT_TUNING=0 and =1, alternating, both from the same archives.

    Start-up figures plus :func:`workloads.warm_figures`, to show what the JIT tuning buys at
    start-up and that a warmed-up session is not slower for it.
    """
    first = [sys.executable, os.path.abspath(__file__), "--side", "ours", "--rows", str(rows)]
    cmd = first + ["--warm"]
    cache = tempfile.mkdtemp(prefix="ros-bench-cache-")
    runs = {"0": [], "1": []}
    try:
        _run_side(first, dict(os.environ, XDG_CACHE_HOME=cache))  # the host's first session builds the archives
        for rep in range(reps):
            for tuning in ("0", "1"):
                runs[tuning].append(_run_side(cmd, dict(os.environ, XDG_CACHE_HOME=cache, RAY_ON_SPARK_JIT_TUNING=tuning)))
                print(f"rep {rep + 1} jit tuning {tuning}: {runs[tuning][-1]}", flush=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    keys = ["init_s", "first_job_s", "init_first_job_s", "second_job_s", "warm_job_s", "warm_join_s", "warm_plan_s"]
    med = {t: {k: round(statistics.median(r[k] for r in runs[t]), 3) for k in keys} for t in runs}
    _print_table(reps, keys, [("HotSpot defaults", med["0"]), ("ray_on_spark.on_ray.jit", med["1"])])
    result = {f"{side}_{k}": med[t][k] for t, side in (("0", "jit_off"), ("1", "jit_on")) for k in keys}
    result["init_first_job_ratio"] = round(med["1"]["init_first_job_s"] / med["0"]["init_first_job_s"], 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
