"""Start-up and shutdown of a Ray cluster on Spark: ray_on_spark vs ray.util.spark vs the floor.

One run, one Spark standalone cluster on 127.0.0.1 (2 workers x 1 core, 2 GiB), the
same arguments for both libraries, alternating, ``--reps`` times each.  The floor is
plain ``ray start``: a head, then N workers once the head answers.

* setup    = call until ``ray.init()`` sees every node;
* shutdown = call until no Ray process of that cluster is left on the host;
* leftover = Ray processes still alive 5 s after the shutdown call returned.

Prints a table and, as its last line, JSON with the medians.

``--nodes 1,2,4,8`` (scale): for each size a fresh standalone cluster of that many 1-core
workers (small memory), ours and ray.util.spark once each in the same run, printing setup
and shutdown seconds and the summed RSS of each Ray worker node's processes (the tree
under its ``ray start``), so growth with the node count shows side by side.
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

from cpu_account import CpuAccount  # noqa: E402

from helpers import ray_processes  # noqa: E402

#: ``--cpu-account``: sample every process's CPU during each setup and print it per kind of process.
CPU_ACCOUNT = False


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


def _worker_node_rss_mib() -> list:
    """Summed RSS (MiB) of each Ray worker node's processes: the tree under each worker node's root --
    our supervisor of a worker node (it watches the head's port), or a ``ray start --address`` of
    ray.util.spark's (ours run under a supervisor and exit once the node is up)."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        ours = "ray_on_spark.runtime.supervisor" in cmd and "--watch-port" in cmd
        theirs = "start" in cmd and any(c.startswith("--address") for c in cmd) and "--head" not in cmd and \
            any("ray" in c for c in cmd[:3])
        if ours or theirs:
            roots.append(p)
    out = []
    seen = set()
    for p in roots:
        try:
            tree = [q for q in [p] + p.children(recursive=True) if q.pid not in seen]
            seen.update(q.pid for q in tree)
            if tree:
                out.append(sum(q.memory_info().rss for q in tree) / 2**20)
        except psutil.Error:
            continue
    return sorted(out)


#: The start-up phases the breakdown prints, each as seconds from the setup call to its end.
PHASES = ("head_launch", "head_raylet", "worker_launch", "worker_raylet", "returned", "all_seen", "host_cpu_s")


def _head_supervisor_ctime() -> float:
    """Create time of our head's supervisor (this process's child that watches no head port), or NaN."""
    import psutil

    for child in psutil.Process().children():
        try:
            cmd = child.cmdline()
            if "ray_on_spark.runtime.supervisor" in cmd and "--watch-port" not in cmd and "--what" not in cmd:
                return child.create_time()
        except psutil.Error:
            continue
    return float("nan")


def _phases(t0_wall: float, returned_wall: float, launched_wall: float = float("nan"),
            head_launch_wall: float = float("nan")) -> dict:
    """Where set-up's seconds went, from the GCS's node table (read through the connected driver).

    * ``head_launch``: the head's ``ray start`` began (ours: its supervisor's create time, a child
      of this process; the floor: at once);
    * ``head_raylet``: the head's raylet registered (its ``start_time_ms``);
    * ``worker_launch``: the last worker node's ``ray start`` began -- for ours, its supervisor's
      create time (a node label); for the floor, when it was spawned; Spark's scheduling, the task's
      Python worker and the barrier rounds are all before it;
    * ``worker_raylet``: the last worker node's raylet registered (``ray start``'s import, its wait
      for the head, the raylet's own start);
    * ``returned``: the setup call returned; ``all_seen``: ``ray.init()`` saw every node;
    * ``host_cpu_s`` (added by the caller): CPU seconds the host spent meanwhile, all cores, every process.
    """
    import ray

    from ray_on_spark import _ray
    from ray_on_spark.on_spark.ray_start import LABEL_CTIME

    views = [v for v in _ray.list_nodes(ray._private.worker.global_worker.gcs_client) if v.alive]
    head = [v.start_time_ms / 1000 for v in views if v.is_head]
    workers = [v for v in views if not v.is_head]
    ctimes = [int(v.labels[LABEL_CTIME]) / 1000 for v in workers if v.labels.get(LABEL_CTIME, "").isdigit()]
    launch = max(ctimes) if ctimes else launched_wall
    return {
        "head_launch": head_launch_wall - t0_wall,
        "head_raylet": (head[0] - t0_wall) if head else float("nan"),
        "worker_launch": launch - t0_wall,
        "worker_raylet": max(v.start_time_ms / 1000 for v in workers) - t0_wall if workers else float("nan"),
        "returned": returned_wall - t0_wall,
    }


def _busy_cpu_s() -> float:
    """CPU seconds the whole host has been busy (all cores, every process), for "how much work was set-up"."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def _run_library(setup, shutdown, n: int) -> dict:
    """Time one library's setup (until ray.init() sees every node) and shutdown (until no process is left)."""
    import ray

    baseline = ray_processes()
    account = CpuAccount().start() if CPU_ACCOUNT else None
    cpu0 = _busy_cpu_s()
    t0 = time.monotonic()
    t0_wall = time.time()
    setup(max_worker_nodes=n, num_cpus_worker_node=1, num_gpus_worker_node=0)
    returned_wall = time.time()
    ray.init()
    _wait_nodes(n + 1)
    setup_s = time.monotonic() - t0
    phases = {**_phases(t0_wall, returned_wall, head_launch_wall=_head_supervisor_ctime()), "all_seen": setup_s,
              "host_cpu_s": _busy_cpu_s() - cpu0}
    cpu = account.stop() if account is not None else {}
    mem = _node_memory()
    rss = _worker_node_rss_mib()
    ray.shutdown()
    t0 = time.monotonic()
    shutdown()
    returned = time.monotonic() - t0
    to_zero = _wait_zero(baseline, timeout=5)  # leftovers: still alive 5 s after the call returned
    left = sorted(p[2][:80] for p in _new_procs(baseline))
    shutdown_s = returned + to_zero if not left else float("nan")
    return {"setup": setup_s, "shutdown": shutdown_s, "leftover": len(left), "mem": mem, "left_cmds": left,
            "rss_mib": rss, "phases": phases, "cpu": cpu}


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
    account = CpuAccount().start() if CPU_ACCOUNT else None
    cpu0 = _busy_cpu_s()
    t0 = time.monotonic()
    t0_wall = time.time()
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
        launched_wall = time.time()
        ray.init(address=address)
        try:
            _wait_nodes(n + 1, timeout=90)
        except TimeoutError:
            for name in sorted(os.listdir(tmp)):
                if name.endswith(".log"):
                    print(f"--- floor {name}:\n" + open(os.path.join(tmp, name)).read()[-2000:])
            raise
        setup = time.monotonic() - t0
        phases = {**_phases(t0_wall, launched_wall, launched_wall, t0_wall), "all_seen": setup,
                  "host_cpu_s": _busy_cpu_s() - cpu0}
        cpu = account.stop() if account is not None else {}
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
    return {"setup": setup, "phases": phases, "cpu": cpu}


def scale(sizes: list, skip_theirs: bool) -> int:
    """One fresh standalone cluster per size; ours and ray.util.spark once each, side by side."""
    from ray_on_spark.spark_env import wait_for_slots
    from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder

    rows = []
    for n in sizes:
        with LocalStandaloneSpark(num_workers=n, cores=1, memory="1g") as local:
            spark = session_builder(local.master_url, f"ray_on_spark-bench-scale-{n}", executor_memory="512m") \
                .getOrCreate()
            try:
                wait_for_slots(spark.sparkContext, n, None, 120)
                spark.sparkContext.parallelize(range(n), n).map(lambda x: x).collect()  # warm-up
                for name, fn in (("ours", run_ours), ("ray.util.spark", run_ray_util_spark)):
                    if name == "ray.util.spark" and skip_theirs:
                        continue
                    r = fn(n)
                    rss = r["rss_mib"]
                    row = {"nodes": n, "library": name, "setup_s": round(r["setup"], 2),
                           "shutdown_s": round(r["shutdown"], 2), "leftover": r["leftover"],
                           "rss_mib_per_node": round(statistics.mean(rss), 0) if rss else float("nan"),
                           "worker_nodes_seen": len(rss)}
                    rows.append(row)
                    print(f"{n:5d} {name:15s} setup {row['setup_s']:7.2f}s  shutdown {row['shutdown_s']:6.2f}s  "
                          f"RSS/node {row['rss_mib_per_node']:7.0f} MiB  leftover {row['leftover']}", flush=True)
            finally:
                spark.stop()
    print()
    print(f"{'nodes':>5s} {'ours setup':>11s} {'ray.util.spark':>15s} {'ratio':>6s} {'ours RSS/node':>14s} "
          f"{'theirs RSS/node':>16s}")
    for n in sizes:
        ours = next(r for r in rows if r["nodes"] == n and r["library"] == "ours")
        theirs = next((r for r in rows if r["nodes"] == n and r["library"] == "ray.util.spark"), None)
        t_setup = theirs["setup_s"] if theirs else float("nan")
        t_rss = theirs["rss_mib_per_node"] if theirs else float("nan")
        print(f"{n:5d} {ours['setup_s']:10.2f}s {t_setup:14.2f}s {ours['setup_s'] / t_setup:6.2f} "
              f"{ours['rss_mib_per_node']:11.0f} MiB {t_rss:13.0f} MiB")
    print(json.dumps({"scale": rows}))
    return 0


def _cpu_medians(results: dict) -> dict:
    """Print, and return, the median CPU seconds per kind of process during setup, per library."""
    names = [n for n in ("ours", "ray.util.spark", "floor") if any(r.get("cpu") for r in results[n])]
    kinds = sorted({k for n in names for r in results[n] for k in r.get("cpu", {})},
                   key=lambda k: -max(statistics.median(r.get("cpu", {}).get(k, 0.0) for r in results[n])
                                      for n in names))
    table = {n: {k: round(statistics.median(r.get("cpu", {}).get(k, 0.0) for r in results[n]), 2) for k in kinds}
             for n in names}
    print()
    print("CPU seconds during setup, per kind of process (median over reps; /proc sampled every 50 ms):")
    print(f"{'':34s}" + "".join(f"{n:>16s}" for n in names))
    for k in kinds:
        print(f"{k:34s}" + "".join(f"{table[n][k]:16.2f}" for n in names))
    print(f"{'total':34s}" + "".join(f"{sum(table[n].values()):16.2f}" for n in names))
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nodes", default="", help="scale mode: comma-separated cluster sizes, e.g. 1,2,4,8")
    ap.add_argument("--skip-ray-util-spark", action="store_true")
    ap.add_argument("--cpu-account", action="store_true",
                    help="sample every process's CPU during each setup; print the medians per kind of process")
    args = ap.parse_args()
    global CPU_ACCOUNT
    CPU_ACCOUNT = args.cpu_account
    logging.basicConfig(level=logging.WARNING)
    # ray.util.spark runs `ray` from PATH (shutil.which) on the driver and executors.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    if args.nodes:
        return scale([int(x) for x in args.nodes.split(",")], args.skip_ray_util_spark)

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
                        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                        if k not in ("phases", "cpu")) + " phases=" + ",".join(
                        f"{k}:{v:.2f}" for k, v in r.get("phases", {}).items()), flush=True)
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
    print(f"ratio ours / ray.util.spark = {ours / theirs:.2f}; ours - floor = {ours - floor:+.2f} s; "
          f"ours / floor = {ours / floor:.2f}")
    print()
    print("where setup's seconds go (median seconds from the setup call to the end of each phase; see _phases):")
    print(f"{'':16s}" + "".join(f"{p:>15s}" for p in PHASES))
    breakdown = {}
    for name in ("ours", "ray.util.spark", "floor"):
        rows = [r["phases"] for r in results[name] if "phases" in r]
        if rows:
            breakdown[name] = {p: round(statistics.median(r[p] for r in rows), 2) for p in PHASES}
            print(f"{name:16s}" + "".join(f"{breakdown[name][p]:15.2f}" for p in PHASES))
    cpu = _cpu_medians(results) if CPU_ACCOUNT else {}
    print(json.dumps({
        "ours_setup_s": round(ours, 2),
        "ray_util_spark_setup_s": round(theirs, 2),
        "floor_s": round(floor, 2),
        "ratio": round(ours / theirs, 3),
        "ours_over_floor": round(ours / floor, 3),
        "ours_shutdown_s": round(med("ours", "shutdown"), 2),
        "ours_leftover_processes": med("ours", "leftover"),
        "ray_util_spark_leftover_processes": med("ray.util.spark", "leftover"),
        "breakdown": breakdown,
        **({"cpu_s_by_process_kind": cpu} if cpu else {}),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
