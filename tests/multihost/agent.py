"""A Spark driver that runs inside a simulated host and does what the test asks, step by step.

Why an agent: the test (in the root namespace) cannot itself be "on" host0, yet it must look at
every host between steps -- what runs there, what files are left -- while the driver keeps its
SparkSession and Ray cluster. So the driver is this process, started in a host with
``python -m tests.multihost.agent``; the test sends it one JSON request per line on stdin
(``{"op": NAME, "kw": {...}}``) and reads one ``REPLY {...}`` line per request on stdout:
``{"ok": result}``, or ``{"error": "Type: message", "type": "Type", "trace": "..."}``. Logs go to
stderr, which the test sends to a file. The ops are the functions in :data:`OPS`.

:class:`Agent` is the test's side.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import time
import traceback
from typing import IO, Any, Callable, Dict, Optional

REPLY = "REPLY "

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inside the host
class _State:
    spark: Any = None
    cluster: Any = None


STATE = _State()


def op_start_spark(master: str, host: str, app: str = "multihost", confs: Optional[Dict[str, str]] = None) -> dict:
    """A SparkSession on ``master`` whose driver binds this host's address."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (SparkSession.builder.master(master).appName(app)
               .config("spark.driver.host", host).config("spark.driver.bindAddress", host)
               .config("spark.executor.memory", "1g").config("spark.pyspark.python", sys.executable)
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false"))
    for k, v in (confs or {}).items():
        builder = builder.config(k, v)
    STATE.spark = builder.getOrCreate()
    return {"app_id": STATE.spark.sparkContext.applicationId}


def op_wait_executors(count: int, timeout: float = 120.0) -> dict:
    from ray_on_spark import spark_env

    slots = spark_env.wait_for_slots(STATE.spark.sparkContext, count, None, timeout)
    return {"slots": slots, "hosts": sorted(spark_env.executor_hosts(STATE.spark.sparkContext))}


def op_setup(**kwargs: Any) -> dict:
    import ray

    import ray_on_spark

    address, client_address = ray_on_spark.setup_ray_cluster(**kwargs)
    ray.init()
    cluster = ray_on_spark.active_cluster()
    return {"address": address, "client_address": client_address,
            "dashboard_url": cluster.dashboard_url if cluster is not None else None,
            "launcher_url": cluster.launcher_url if cluster is not None else None}


def op_shutdown() -> dict:
    import ray_on_spark

    t0 = time.monotonic()
    ray_on_spark.shutdown_ray_cluster()
    return {"seconds": time.monotonic() - t0}


def _nodes() -> list:
    import ray

    return [n for n in ray.nodes() if n["Alive"]]


def _is_head(n: dict) -> bool:
    return "node:__internal_head__" in n["Resources"]


def op_layout() -> dict:
    """Where the head and the worker nodes are, and what each node got."""
    nodes = _nodes()
    return {
        "head": [n["NodeManagerAddress"] for n in nodes if _is_head(n)],
        "workers": sorted(
            ({"ip": n["NodeManagerAddress"], "id": n["NodeID"], "object_store": n["Resources"].get("object_store_memory", 0),
              "memory": n["Resources"].get("memory", 0), "cpus": n["Resources"].get("CPU", 0)}
             for n in nodes if not _is_head(n)), key=lambda w: w["ip"]),
    }


def op_work_across_nodes(mib: int = 50) -> dict:
    """Tasks and actors on every worker node, and a ``mib`` MiB object made on one, read on another."""
    import numpy as np
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

    workers = [n for n in _nodes() if not _is_head(n)]

    @ray.remote(num_cpus=0.1)
    def where() -> str:
        return ray.util.get_node_ip_address()

    @ray.remote(num_cpus=0.1)
    class Where:
        def ip(self) -> str:
            return ray.util.get_node_ip_address()

    @ray.remote(num_cpus=0.1)
    def make(n: int) -> Any:
        return np.ones(n, dtype=np.uint8)

    @ray.remote(num_cpus=0.1)
    def total(a: Any) -> list:
        return [int(a.sum()), ray.util.get_node_ip_address()]

    def on(node: dict, soft: bool = False) -> Any:
        return On(node["NodeID"], soft=soft)

    task_ips = ray.get([where.options(scheduling_strategy=on(n)).remote() for n in workers], timeout=120)
    actors = [Where.options(scheduling_strategy=on(n)).remote() for n in workers]
    actor_ips = ray.get([a.ip.remote() for a in actors], timeout=120)
    for a in actors:
        ray.kill(a)
    crossed: list = []
    if len(workers) >= 2:
        obj = make.options(scheduling_strategy=on(workers[0])).remote(mib * 2**20)
        crossed = ray.get(total.options(scheduling_strategy=on(workers[1])).remote(obj), timeout=120)
        del obj
    return {"task_ips": sorted(task_ips), "actor_ips": sorted(actor_ips), "crossed": crossed,
            "made_on": workers[0]["NodeManagerAddress"] if workers else None}


def op_status() -> dict:
    """The cluster's own status, and the addresses of the alive worker nodes as the GCS lists them."""
    import ray_on_spark

    cluster = ray_on_spark.active_cluster()
    status = cluster.status() if cluster is not None else {}
    return {"status": {k: str(v) if not isinstance(v, (int, float, bool, list, dict, type(None))) else v
                       for k, v in status.items()},
            "worker_ips": sorted(n["NodeManagerAddress"] for n in _nodes() if not _is_head(n))}


def op_work_on(ip: str, tasks: int = 4, timeout: float = 60.0) -> dict:
    """``tasks`` tasks on the worker node at ``ip``; how long they took."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On

    node = next(n for n in _nodes() if n["NodeManagerAddress"] == ip and not _is_head(n))

    @ray.remote(num_cpus=0.1)
    def square(x: int) -> int:
        return x * x

    t0 = time.monotonic()
    out = ray.get([square.options(scheduling_strategy=On(node["NodeID"], soft=False)).remote(i) for i in range(tasks)],
                  timeout=timeout)
    return {"results": out, "seconds": time.monotonic() - t0}


def op_convert(rows: int = 100_000, parquet_dir: Optional[str] = None) -> dict:
    """from_spark of a range (and of a Parquet table in ``parquet_dir``) and to_spark back: counts and sums."""
    import ray_on_spark

    spark = STATE.spark
    df = spark.range(0, rows, numPartitions=4).selectExpr("id", "id * 2 AS twice")
    ds = ray_on_spark.from_spark(df)
    out: Dict[str, Any] = {"from_spark": [ds.count(), int(ds.sum("twice"))]}
    back = ray_on_spark.to_spark(ds.map_batches(lambda b: {"id": b["id"], "twice": b["twice"] + 1}), spark)
    out["to_spark"] = [back.count(), int(back.selectExpr("sum(twice)").first()[0])]
    if parquet_dir is not None:
        df.write.mode("overwrite").parquet(parquet_dir)
        from_parquet = ray_on_spark.from_spark(spark.read.parquet(parquet_dir))
        out["from_parquet"] = [from_parquet.count(), int(from_parquet.sum("twice"))]
    return out


def op_convert_expect_refusal(timeout: float = 30.0) -> dict:
    """A from_spark that should be refused: the error's type and text, and how long it took."""
    import ray_on_spark

    t0 = time.monotonic()
    try:
        ray_on_spark.from_spark(STATE.spark.range(1000))
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e), "seconds": time.monotonic() - t0}
    return {"type": None, "message": "", "seconds": time.monotonic() - t0}


def op_stop_spark() -> dict:
    if STATE.spark is not None:
        STATE.spark.stop()
        STATE.spark = None
    return {}


def op_ray_connect(address: str) -> dict:
    import ray

    ray.init(address=address, log_to_driver=False)
    return {"cpus": ray.cluster_resources().get("CPU", 0)}


def op_ray_resources() -> dict:
    import ray

    return {"total": ray.cluster_resources(), "available": ray.available_resources()}


def op_init_spark(app_name: str, num_executors: int, executor_cores: int, executor_memory: str,
                  configs: Optional[Dict[str, str]] = None) -> dict:
    """A Spark-on-Ray session: where its master, driver and executors are."""
    import ray_on_spark
    from ray_on_spark import spark_env

    t0 = time.monotonic()
    STATE.spark = ray_on_spark.init_spark(app_name, num_executors, executor_cores, executor_memory, configs=configs)
    took = time.monotonic() - t0
    sc = STATE.spark.sparkContext
    return {"seconds": took, "master": sc.master, "driver_host": sc.getConf().get("spark.driver.host"),
            "driver_bind": sc.getConf().get("spark.driver.bindAddress"),
            "executor_hosts": sorted(e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()
                                     if e.host() != sc.getConf().get("spark.driver.host")),
            "executors": spark_env.executor_count(sc)}


def op_spark_job(rows: int = 1_000_000) -> dict:
    """A shuffle across the executors: its result and the hosts its tasks ran on."""
    import socket

    df = STATE.spark.range(0, rows, numPartitions=8)
    total = df.selectExpr("id % 10 AS k", "id").groupBy("k").sum("id").selectExpr("sum(`sum(id)`)").first()[0]
    hosts = STATE.spark.sparkContext.parallelize(range(8), 8).map(lambda _: socket.gethostname()).distinct().collect()
    return {"sum": int(total), "task_hostnames": sorted(hosts)}


def op_stop_spark_on_ray(cleanup_data: bool = True) -> dict:
    import ray_on_spark

    ray_on_spark.stop_spark(cleanup_data=cleanup_data)
    STATE.spark = None
    return {}


OPS: Dict[str, Callable[..., Any]] = {
    name[len("op_"):]: fn for name, fn in dict(globals()).items() if name.startswith("op_") and callable(fn)
}


def serve(stdin: IO[str], stdout: IO[str]) -> None:
    for line in stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = {"ok": OPS[request["op"]](**request.get("kw", {}))}
        except BaseException as e:  # reported to the test, which decides
            log.exception("op %s failed", request.get("op"))
            reply = {"error": f"{type(e).__name__}: {e}", "type": type(e).__name__, "trace": traceback.format_exc()}
        stdout.write(REPLY + json.dumps(reply, default=str) + "\n")
        stdout.flush()
        if request["op"] == "exit":
            break


def op_exit() -> dict:
    return {}


OPS["exit"] = op_exit


# --------------------------------------------------------------------------- the test's side
class AgentError(RuntimeError):
    """An op failed inside the agent; ``type`` is the exception's class name there."""

    def __init__(self, op: str, reply: dict, log_path: str):
        super().__init__(f"{op}: {reply['error']}\n{reply.get('trace', '')}\n(driver log: {log_path})")
        self.type = reply.get("type")


class Agent:
    """The driver agent running in ``host``; ``call(op, timeout, **kw)`` runs one op there."""

    def __init__(self, host: Any, log_path: str, env: Dict[str, str], cwd: str):
        self.host = host
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = host.popen([sys.executable, "-m", "tests.multihost.agent"], env=env, cwd=cwd,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._buffer = b""

    def call(self, op: str, timeout: float = 180.0, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "kw": kw}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                raise TimeoutError(f"{op} did not answer within {timeout:.0f}s (driver log: {self.log_path}):\n"
                                   + self.log_tail())
            if line.startswith(REPLY):
                reply = json.loads(line[len(REPLY):])
                if "error" in reply:
                    raise AgentError(op, reply, self.log_path)
                return reply["ok"]
            log.info("agent: %s", line)  # anything else it printed

    def _line(self, deadline: float) -> Optional[str]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def log_tail(self, chars: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    def close(self, timeout: float = 60.0) -> None:
        """Ask it to exit; kill it (and wait) when it does not."""
        try:
            if self.proc.poll() is None:
                self.call("exit", timeout=timeout)
            self.proc.wait(timeout=timeout)
        except Exception as e:
            log.warning("agent did not exit by itself (%s); killing it", e)
            self.proc.kill()
            self.proc.wait(timeout=30)
        finally:
            self._log.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(sys.stdin, sys.stdout)
