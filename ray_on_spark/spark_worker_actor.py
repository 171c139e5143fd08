"""The Ray actor that hosts one Spark executor (RayDP mode).

Each actor reserves one executor's cores and memory in Ray (it is scheduled on one
placement-group bundle) and runs a Spark *standalone Worker* offering exactly those
cores and that memory, so the private master places exactly one executor on it.  The
Worker runs under :mod:`ray_on_spark.supervisor` (a child-subreaper), which makes the
Worker JVM and the executor JVM it forks part of the actor's process tree: when the
actor dies -- ``ray.kill``, a node failure, ``stop_spark()`` -- the supervisor notices its
parent is gone and ends the whole tree, and Spark sees a lost executor.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from typing import Dict, Optional

from ray_on_spark import procs
from ray_on_spark.local_standalone import java_env, spark_home
from ray_on_spark.worker_task import NodeProcess

logger = logging.getLogger(__name__)

#: Heap of the Worker daemon itself (Spark's default is 1g; it only forks executors).
DAEMON_MEMORY = "256m"
READY_MARKER = "Successfully registered with master"


def daemon_env(host: str, temp_dir: str, secret: str, opts_var: str) -> Dict[str, str]:
    """Environment of a Spark daemon (master or worker): bound to ``host``, logs and work in ``temp_dir``.

    The shared secret goes in ``_SPARK_AUTH_SECRET`` (Spark's own variable), never on a
    command line, where other users could read it.
    """
    env = java_env()
    env.update({
        "SPARK_LOCAL_IP": host,
        "SPARK_LOG_DIR": temp_dir,
        "SPARK_WORKER_DIR": os.path.join(temp_dir, "work"),
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_MEMORY": DAEMON_MEMORY,
        "_SPARK_AUTH_SECRET": secret,
        opts_var: "-Dspark.authenticate=true",
        "PYSPARK_PYTHON": sys.executable,
        "TMPDIR": temp_dir,
    })
    return env


def supervised(cmd: list, *, log: str, temp_dir: str, what: str, marker: str, timeout: float,
               janitor: bool = False) -> list:
    """``cmd`` wrapped in a supervisor that follows this process and removes ``temp_dir``."""
    return [
        sys.executable, "-m", "ray_on_spark.supervisor",
        "--log", log,
        "--parent-pid", str(os.getpid()),
        "--cleanup-dir", temp_dir,
        "--start-timeout", str(timeout),
        "--what", what,
        "--ready-marker", marker,
        *(["--janitor"] if janitor else []),
        "--",
        *cmd,
    ]


class SparkWorkerActor:
    """One Spark executor's home in Ray; created by :class:`ray_on_spark.spark_on_ray.SparkOnRay`."""

    def __init__(self, index: int, temp_root: Optional[str] = None):
        self.index = index
        self.temp_root = temp_root
        self.node: Optional[NodeProcess] = None
        self.records: list = []

    def where(self) -> dict:
        import ray

        return {"pid": os.getpid(), "ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id()}

    def start(self, master_url: str, host: Optional[str], cores: int, memory_mib: int, secret: str,
              timeout: float = 60.0) -> dict:
        """Start the Worker; return once it has registered with the master."""
        import ray

        host = host or ray.util.get_node_ip_address()
        temp_dir = tempfile.mkdtemp(prefix=f"ros-spark-w{self.index}-", dir=self.temp_root)  # 0700
        cmd = [
            os.path.join(spark_home(), "bin", "spark-class"), "org.apache.spark.deploy.worker.Worker",
            "--host", host, "--port", "0", "--webui-port", "0",
            "--cores", str(cores), "--memory", f"{memory_mib}m",
            "--work-dir", os.path.join(temp_dir, "work"),
            master_url,
        ]
        sup = supervised(cmd, log=os.path.join(temp_dir, "worker.log"), temp_dir=temp_dir, what="Spark worker",
                         marker=READY_MARKER, timeout=timeout, janitor=True)
        self.node = NodeProcess(sup, daemon_env(host, temp_dir, secret, "SPARK_WORKER_OPTS"), what="Spark worker")
        failure = self.node.wait_ready(timeout + 5)
        if failure is not None:
            self.node.stop()
            raise RuntimeError(f"Spark worker {self.index} on {host} did not start: {failure}")
        record = self.node.record
        self.records = [record] if record else []
        return {"index": self.index, "host": host, "actor_pid": os.getpid(),
                "supervisor": (record.pid, record.create_time) if record else None}

    def jvm_pids(self) -> list:
        """Pids of the Worker and executor JVMs under this actor (for tests and checks)."""
        if self.node is None:
            return []
        out = []
        for r in procs.tree(self.node.pid):
            p = r.process()
            try:
                if p is not None and "java" in p.name():
                    out.append(r.pid)
            except Exception:
                pass
        return out

    def stop(self, timeout: float = 15.0) -> bool:
        """End the Worker and its executor; True once every process of the tree is gone."""
        if self.node is None:
            return True
        tree = procs.tree(self.node.pid)
        self.node.stop(timeout)
        left = procs.wait_gone(tree, timeout)
        self.node = None
        return not left
