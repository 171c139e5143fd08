"""A Spark standalone cluster across the rig's hosts: the master on one, a worker on each of others.

As on real machines, each daemon runs in its own host, binds that host's address, and keeps
its work dir (and so its executors' files) in that host's private /tmp. Readiness comes from
the master's JSON endpoint, asked from inside the master's host (the root namespace has no
route into the rig). Daemon output goes to files in ``log_dir`` (the test's side).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

log = logging.getLogger(__name__)

MASTER_PORT = 7077
MASTER_UI_PORT = 8080
WORKER_UI_PORT = 8081

_STATE = """
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    print(json.dumps([w["host"] for w in json.loads(r.read()).get("workers", []) if w.get("state") == "ALIVE"]))
"""


def host_env(host: Any) -> Dict[str, str]:
    """The environment of a Spark or driver process in ``host``: Java 17, its own address, private dirs."""
    from ray_on_spark.spark_env import java_env

    env = java_env()
    env.update({"SPARK_LOCAL_IP": host.ip, "SPARK_NO_DAEMONIZE": "1", "PYSPARK_PYTHON": sys.executable,
                "SPARK_WORKER_DIR": "/tmp/spark-work", "SPARK_LOG_DIR": "/tmp/spark-logs",
                "PYTHONUNBUFFERED": "1"})
    for key in ("RAY_ADDRESS", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(key, None)
    return env


class SparkOnHosts:
    """Master on ``master_host``; :meth:`add_worker` puts a worker on a host."""

    def __init__(self, master_host: Any, log_dir: str, cwd: str):
        self.master_host = master_host
        self.log_dir = log_dir
        self.cwd = cwd
        self.url = f"spark://{master_host.ip}:{MASTER_PORT}"
        self._daemons: Dict[str, subprocess.Popen] = {}
        self._logs: List[Any] = []

    def _spawn(self, name: str, host: Any, args: List[str]) -> None:
        from ray_on_spark.spark_env import spark_home

        out = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        self._logs.append(out)
        self._daemons[name] = host.popen([os.path.join(spark_home(), "bin", "spark-class"), *args], env=host_env(host),
                                         cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT)

    def alive_workers(self) -> Optional[List[str]]:
        """Hosts of the ALIVE workers, as the master says; None while it does not answer."""
        done = self.master_host.run([sys.executable, "-c", _STATE, f"http://{self.master_host.ip}:{MASTER_UI_PORT}/json"],
                                    capture_output=True, text=True, timeout=30)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def _wait(self, probe: Any, what: str, timeout: float, daemons: List[str]) -> None:
        """Poll ``probe`` until it holds; fail at once when one of ``daemons`` (the master, the new
        worker) exits. Others may be gone on purpose (a lost host)."""
        deadline = time.monotonic() + timeout
        while not probe():
            dead = [n for n in daemons if n in self._daemons and self._daemons[n].poll() is not None]
            if dead:
                raise RuntimeError(f"Spark {dead} exited while waiting for {what}; logs in {self.log_dir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout:.0f}s; logs in {self.log_dir}")
            time.sleep(0.3)

    def start(self, timeout: float = 90.0) -> "SparkOnHosts":
        h = self.master_host
        self._spawn("master", h, ["org.apache.spark.deploy.master.Master", "--host", h.ip, "--port", str(MASTER_PORT),
                                  "--webui-port", str(MASTER_UI_PORT)])
        self._wait(lambda: self.alive_workers() is not None, "Spark master", timeout, ["master"])
        return self

    def add_worker(self, host: Any, cores: int, memory: str = "2g", timeout: float = 90.0) -> None:
        self._spawn(f"worker-{host.name}", host, ["org.apache.spark.deploy.worker.Worker", "--host", host.ip,
                                                  "--cores", str(cores), "--memory", memory,
                                                  "--webui-port", str(WORKER_UI_PORT), self.url])
        self._wait(lambda: host.ip in (self.alive_workers() or []), f"Spark worker on {host.name}", timeout,
                   ["master", f"worker-{host.name}"])

    def stop_worker(self, host: Any, timeout: float = 30.0) -> None:
        self._stop(f"worker-{host.name}", timeout)

    def _stop(self, name: str, timeout: float) -> None:
        proc = self._daemons.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # the worker ends its executors (their JVMs and Python workers) too
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        for name in [n for n in self._daemons if n != "master"] + ["master"]:
            self._stop(name, 30)
        for f in self._logs:
            f.close()
        self._logs = []
