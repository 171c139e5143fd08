"""A real Spark standalone cluster (master + workers) on 127.0.0.1, from pyspark's jars.

Used by the tests (session fixture), the demo and the benchmarks.  Each daemon is
started with ``spark-class`` under the library's node supervisor (the one that runs Ray
nodes), so it goes with the process that started it even when that process is SIGKILLed
(a benchmark or test run cut off by its timeout); readiness comes from the master's JSON
endpoint, and ``stop()`` ends exactly the processes it started.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from typing import TYPE_CHECKING, Callable, Dict, List

from ray_on_spark.runtime import procs
from ray_on_spark.runtime.ports import free_ports
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.runtime.waiting import wait_until
from ray_on_spark.spark_env import java_env, spark_home

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

#: How this cluster's supervisors name their daemons (``--what``); tests that count the
#: library's processes leave these out, as they are the test's Spark, not the library's.
STANDALONE = "Spark standalone"


class LocalStandaloneSpark:
    """Spark standalone master and ``num_workers`` workers bound to 127.0.0.1."""

    def __init__(
        self, num_workers: int = 2, cores: int = 1, memory: str = "2g", host: str = "127.0.0.1", gpus_per_worker: int = 0
    ):
        self.num_workers = num_workers
        #: Fake GPUs for tests: worker i offers addresses i*g .. i*g+g-1 through a discovery
        #: script (spark.worker.resource.gpu.discoveryScript), so no real GPU is needed.
        self.gpus_per_worker = gpus_per_worker
        self.cores = cores
        self.memory = memory
        self.host = host
        self.work_dir = tempfile.mkdtemp(prefix="ros-spark-")
        self._procs: List[subprocess.Popen] = []
        self._supervised: List[SupervisedProcess] = []
        self.master_port, self.master_ui_port = free_ports(2, host)
        self.master_url = f"spark://{host}:{self.master_port}"

    def _spawn(self, name: str, args: List[str], env: Dict[str, str], ready_marker: str, timeout: float) -> None:
        """Start one daemon under a supervisor that ends its whole tree (executors included)
        when it is told to, or when this process dies."""
        command = [os.path.join(spark_home(), "bin", "spark-class"), *args]
        cmd = supervisor_command(command, log=os.path.join(self.work_dir, f"{name}.log"), cleanup_dir="",
                                 start_timeout=timeout, what=f"{STANDALONE} {name}", ready_marker=ready_marker)
        sp = SupervisedProcess(cmd, env, what=f"{STANDALONE} {name}")
        self._supervised.append(sp)
        self._procs.append(sp.proc)

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://{self.host}:{self.master_ui_port}/json", timeout=2) as r:
            return json.loads(r.read())

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return -1

    def start(self, timeout: float = 90.0) -> "LocalStandaloneSpark":
        env = java_env()
        env.update({
            "SPARK_LOCAL_IP": self.host,
            "SPARK_LOG_DIR": self.work_dir,
            "SPARK_WORKER_DIR": os.path.join(self.work_dir, "work"),
            "SPARK_NO_DAEMONIZE": "1",
        })
        try:
            self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", self.host,
                                   "--port", str(self.master_port), "--webui-port", str(self.master_ui_port)], env,
                        "Starting Spark master", timeout)
            self._wait(lambda: self.alive_workers() >= 0, timeout, "the Spark master's web UI")
            for i in range(self.num_workers):
                (ui_port,) = free_ports(1, self.host)
                worker_env = dict(env)
                if self.gpus_per_worker:
                    worker_env["SPARK_WORKER_OPTS"] = (
                        f"-Dspark.worker.resource.gpu.amount={self.gpus_per_worker} "
                        f"-Dspark.worker.resource.gpu.discoveryScript={self._gpu_script(i)}"
                    )
                self._spawn(f"worker{i}", ["org.apache.spark.deploy.worker.Worker", "--host", self.host,
                                           "--cores", str(self.cores), "--memory", self.memory,
                                           "--webui-port", str(ui_port), self.master_url], worker_env,
                            "Starting Spark worker", timeout)
            self._wait(lambda: self.alive_workers() >= self.num_workers, timeout, f"{self.num_workers} Spark workers")
        except BaseException:
            self.stop()
            raise
        return self

    def _gpu_script(self, worker: int) -> str:
        first = worker * self.gpus_per_worker
        addresses = ",".join(f'"{a}"' for a in range(first, first + self.gpus_per_worker))
        path = os.path.join(self.work_dir, f"gpus-worker{worker}.sh")
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\necho \'{{"name": "gpu", "addresses": [{addresses}]}}\'\n')
        os.chmod(path, 0o755)
        return path

    def _wait(self, probe: Callable[[], bool], timeout: float, what: str) -> None:
        def check() -> None:
            if any(p.poll() is not None for p in self._procs):
                raise RuntimeError(f"a Spark daemon exited while waiting for {what}; logs in {self.work_dir}")

        wait_until(probe, timeout=timeout, what=f"{what} (logs in {self.work_dir})", poll=0.2, check=check)

    def stop(self) -> None:
        """Stop the workers (and the executors they run) and the master; remove work dirs.

        Each supervisor, on SIGTERM, ends its daemon's whole tree (it is their subreaper)."""
        records: List[procs.ProcessRecord] = []
        for p in self._procs:
            records += procs.tree(p.pid)
        for p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
        left = procs.wait_gone(records, 15)
        if left:
            procs.terminate(left, grace=1)
        for p in self._procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._procs = []
        self._supervised = []
        if not os.environ.get("RAY_ON_SPARK_KEEP_SPARK_LOGS"):
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def executor_deaths(self, tail: int = 60) -> str:
        """The last ``tail`` lines of every executor log here that shows the executor dying of an
        error (an ``OutOfMemoryError``: Spark's exit code 52; an uncaught exception), for a failed
        test's report: the work dir is removed when the cluster stops."""
        return executor_deaths(os.path.join(self.work_dir, "work"), tail)

    def __enter__(self) -> "LocalStandaloneSpark":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


#: What in an executor's stderr means it died of an error worth showing with a failed test.
EXECUTOR_DEATHS = ("OutOfMemoryError", "Uncaught exception in thread")


def executor_deaths(worker_dir: str, tail: int = 60) -> str:
    """Tails of the executor logs (``<worker_dir>/<app>/<executor>/stderr``) that show an executor dying."""
    shown = []
    for path in sorted(glob.glob(os.path.join(worker_dir, "*", "*", "stderr"))):
        try:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if any(d in line for line in lines for d in EXECUTOR_DEATHS):
            shown.append(f"--- {path} (last {tail} lines)\n" + "\n".join(lines[-tail:]))
    return "\n".join(shown)


def session_builder(master: str, app_name: str = "ray_on_spark", executor_memory: str = "1g") -> "SparkSession.Builder":
    """A SparkSession builder with the settings the local tests/demo need."""
    from pyspark.sql import SparkSession

    # pyspark takes the executors' Python from PYSPARK_PYTHON (default "python3"), not
    # from spark.pyspark.python, when the session is created in-process.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executor.memory", executor_memory)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
