"""Test helpers that look at real processes (psutil), never at mocks."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterable, Iterator, Set, Tuple

import psutil

from ray_on_spark.testing.local_standalone import STANDALONE

RAY_MARKERS = (
    "ray_on_spark.runtime.supervisor",
    "ray.scripts.scripts",
    "ray_on_spark.on_spark.join_head",
    "/ray/core/src/ray/raylet/raylet",
    "/ray/core/src/ray/gcs/gcs_server",
    "ray/dashboard/",
    "default_worker.py",
    "ray/_private/log_monitor.py",
    "ray/autoscaler/_private/monitor.py",
    "ray.util.client.server",
    "ray::",
    "ray-dashboard-",
)

Proc = Tuple[int, float, str]


def to_arrow(df):
    """The DataFrame collected as one Arrow table: ``toArrow()`` on pyspark 4, its private predecessor on 3.5."""
    import pyarrow as pa

    from ray_on_spark import spark_env

    if hasattr(df, "toArrow"):
        return df.toArrow()
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone")
    return pa.Table.from_batches(df._collect_as_arrow(), schema=spark_env.arrow_schema(df.schema, tz, False))


def ray_processes() -> Set[Proc]:
    """Every live (non-zombie) Ray process on this host started by the library or Ray."""
    found = set()
    for p in psutil.process_iter(["pid", "create_time", "cmdline", "name", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or []) or (p.info["name"] or "")
            if any(m in cmd for m in RAY_MARKERS) and f"--what {STANDALONE}" not in cmd:
                found.add((p.info["pid"], p.info["create_time"], cmd[:160]))
        except psutil.Error:
            continue
    return found


def wait_no_new_ray_processes(baseline: Iterable[Proc], timeout: float = 15.0) -> Set[Proc]:
    """Return the Ray processes not in ``baseline`` that are still alive after ``timeout``."""
    base = {(pid, ct) for pid, ct, _ in baseline}
    deadline = time.monotonic() + timeout
    while True:
        extra = {p for p in ray_processes() if (p[0], p[1]) not in base}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)


def active_spark_jobs(sc) -> list:
    return list(sc.statusTracker().getActiveJobsIds())


SPARK_JVM_MARKERS = ("org.apache.spark.deploy.master.Master", "org.apache.spark.deploy.worker.Worker",
                     "CoarseGrainedExecutorBackend")


def spark_jvms() -> Set[Tuple[int, float]]:
    """Live Spark daemon and executor JVMs on this host (not drivers' gateways)."""
    found = set()
    for p in psutil.process_iter(["pid", "create_time", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if any(m in cmd for m in SPARK_JVM_MARKERS):
                found.add((p.info["pid"], p.info["create_time"]))
        except psutil.Error:
            continue
    return found


@contextlib.contextmanager
def ray_start_head(log_dir, num_cpus: int, prefix: str = "rost-") -> Iterator[Tuple[str, Dict[str, str]]]:
    """A ``ray start --head`` cluster under our supervisor, with Ray's token auth on, as separate drivers find it.

    Yields its address and the environment a driver needs (the token); stops it and removes its temp dir.
    """
    from ray_on_spark.runtime.ports import free_ports

    (port,) = free_ports(1)
    temp = tempfile.mkdtemp(prefix=prefix)  # short: Ray's socket paths must fit in 107 bytes
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    log = os.path.join(str(log_dir), "head.log")
    head = subprocess.Popen(
        [sys.executable, "-m", "ray_on_spark.runtime.supervisor", "--log", log, "--",
         sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
         f"--num-cpus={num_cpus}", "--include-dashboard=false", f"--temp-dir={temp}", "--object-store-memory=300000000"],
        stdout=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    try:
        assert head.stdout.readline().strip() == "READY", open(log).read()[-3000:]
        yield f"127.0.0.1:{port}", env
    finally:
        head.terminate()
        head.wait(60)
        shutil.rmtree(temp, ignore_errors=True)
