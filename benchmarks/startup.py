"""Start-up and shutdown of a Ray cluster on Spark: ray_on_spark vs ray.util.spark vs the floor.

One run, one Spark standalone cluster on 127.0.0.1 (2 workers x 1 core, 2 GiB), the
same arguments for both libraries, alternating, ``--reps`` times each.  The floor is
plain ``ray start``: a head, then N workers once the head answers.

* setup    = call until ``ray.init()`` sees every node;
* shutdown = call until no Ray process of that cluster is left on the host;
* leftover = Ray processes still alive 5 s after the shutdown call returned.

Prints a table and, as its last line, JSON with the medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from helpers import ray_processes  # noqa: E402


def _new_procs(baseline):
    base = {(p, c) for p, c, _ in baseline}
    return {p for p in ray_processes() if (p[0], p[1]) not in base}


def _wait_zero(baseline, timeout=60.0) -> float:
    t0 = time.monotonic()
    while _new_procs(baseline) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return time.monotonic() - t0


def _wait_nodes(n: int, timeout=300.0) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for x in ray.nodes() if x["Alive"]) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} nodes not seen")
        time.sleep(0.05)


def _node_memory():
    import ray

    return [
        (x["Resources"].get("memory", 0) / 2**30, x["Resources"].get("object_store_memory", 0) / 2**30)
        for x in ray.nodes()
        if x["Alive"] and "node:__internal_head__" not in x["Resources"]
    ]


def _run_library(setup, shutdown, n: int) -> dict:
    """Time one library's setup (until ray.init() sees every node) and shutdown (until no process is left)."""
    import ray

    baseline = ray_processes()
    t0 = time.monotonic()
    setup(max_worker_nodes=n, num_cpus_worker_node=1, num_gpus_worker_node=0)
    ray.init()
    _wait_nodes(n + 1)
    setup_s = time.monotonic() - t0
    mem = _node_memory()
    ray.shutdown()
    t0 = time.monotonic()
    shutdown()
    returned = time.monotonic() - t0
    to_zero = _wait_zero(baseline, timeout=5)  # leftovers: still alive 5 s after the call returned
    left = sorted(p[2][:80] for p in _new_procs(baseline))
    shutdown_s = returned + to_zero if not left else float("nan")
    return {"setup": setup_s, "shutdown": shutdown_s, "leftover": len(left), "mem": mem, "left_cmds": left}


def run_ours(n: int) -> dict:
    import ray_on_spark

    return _run_library(ray_on_spark.setup_ray_cluster, ray_on_spark.shutdown_ray_cluster, n)


def run_ray_util_spark(n: int) -> dict:
    """ray.util.spark with RAY_AUTH_MODE=disabled: with the variable unset, Ray 2.60 turns token auth on for its
    head when ~/.ray/auth_token exists (any local ``ray.init()`` writes one) but not for its worker nodes, which
    are then refused ("InvalidAuthToken") and setup fails after its timeout."""
    from ray.util import spark as rus

    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        return _run_library(rus.setup_ray_cluster, rus.shutdown_ray_cluster, n)
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def run_floor(n: int) -> dict:
    """Plain `ray start`: head, then the workers once the head's GCS answers."""
    import ray

    from ray_on_spark.runtime.ports import free_ports

    baseline = ray_processes()
    tmp = tempfile.mkdtemp(prefix="ros-floor-")
    port = free_ports(1)[0]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    ray_cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats"]
    procs = []
    t0 = time.monotonic()
    dash_port, client_port = free_ports(2)
    procs.append(subprocess.Popen(ray_cmd + ["--head", f"--port={port}", "--num-cpus=0", f"--temp-dir={tmp}/h",
                                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
                                            f"--ray-client-server-port={client_port}", "--dashboard-agent-listen-port=0",
                                            "--min-worker-port=0", "--max-worker-port=0"], env=env,
                                  stdout=open(f"{tmp}/head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
    import ray._private.services as services

    from ray_on_spark import _ray
    from ray_on_spark.runtime.waiting import wait_until

    address = f"{services.get_node_ip_address()}:{port}"
    old = _ray.use_auth(None)  # the floor's plain `ray start` has no token
    try:
        wait_until(lambda: _ray.list_nodes(_ray.gcs_client(address)) or None, timeout=120, what="floor head")
        for i in range(n):
            procs.append(subprocess.Popen(ray_cmd + [f"--address={address}", "--num-cpus=1", f"--temp-dir={tmp}/w{i}",
                                                    "--min-worker-port=0", "--max-worker-port=0",
                                                    "--dashboard-agent-listen-port=0"], env=env,
                                          stdout=open(f"{tmp}/w{i}.log", "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
        ray.init(address=address)
        try:
            _wait_nodes(n + 1, timeout=90)
        except TimeoutError:
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".log"):
                    print(f"--- floor {name}:\n" + open(os.path.join(tmp, name)).read()[-2000:])
            raise
        setup = time.monotonic() - t0
        ray.shutdown()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        _ray.restore_auth(old)
    _wait_zero(baseline, timeout=20)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return {"setup": setup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-ray-util-spark", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # ray.util.spark runs `ray` from PATH (shutil.which) on the driver and executors.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder

    results = {"ours": [], "ray.util.spark": [], "floor": []}
    with LocalStandaloneSpark(num_workers=args.workers, cores=1, memory="2g") as local:
        spark = session_builder(local.master_url, "ray_on_spark-bench-startup").getOrCreate()
        try:
            wait_for_slots(spark.sparkContext, args.workers, None, 60)
            # warm-up: first Python workers, imports, JIT of the Spark scheduler
            spark.sparkContext.parallelize(range(args.workers), args.workers).map(lambda x: x).collect()
            for rep in range(args.reps):
                order = ["ours", "ray.util.spark", "floor"] if rep % 2 == 0 else ["floor", "ray.util.spark", "ours"]
                for name in order:
                    if name == "ray.util.spark" and args.skip_ray_util_spark:
                        continue
                    fn = {"ours": run_ours, "ray.util.spark": run_ray_util_spark, "floor": run_floor}[name]
                    r = fn(args.workers)
                    results[name].append(r)
                    print(f"rep {rep} {name:15s} " + " ".join(
                        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
        finally:
            spark.stop()

    def med(name, key):
        vals = [r[key] for r in results[name] if key in r]
        return statistics.median(vals) if vals else float("nan")

    ours, theirs, floor = med("ours", "setup"), med("ray.util.spark", "setup"), med("floor", "setup")
    print()
    print(f"{'':16s}{'setup s':>10s}{'shutdown s':>12s}{'leftover':>10s}  per-node memory / object store GiB")
    for name in ("ours", "ray.util.spark", "floor"):
        if not results[name]:
            continue
        mem = results[name][0].get("mem", "")
        print(f"{name:16s}{med(name, 'setup'):10.2f}{med(name, 'shutdown'):12.2f}{med(name, 'leftover'):10.0f}  "
              + ", ".join(f"{h:.2f}/{o:.2f}" for h, o in mem))
    print(f"ratio ours / ray.util.spark = {ours / theirs:.2f}; ours - floor = {ours - floor:+.2f} s")
    print(json.dumps({
        "ours_setup_s": round(ours, 2),
        "ray_util_spark_setup_s": round(theirs, 2),
        "floor_s": round(floor, 2),
        "ratio": round(ours / theirs, 3),
        "ours_shutdown_s": round(med("ours", "shutdown"), 2),
        "ours_leftover_processes": med("ours", "leftover"),
        "ray_util_spark_leftover_processes": med("ray.util.spark", "leftover"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
