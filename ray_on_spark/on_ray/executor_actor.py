"""The Ray actor that hosts one Spark executor (RayDP mode).

Each actor reserves one executor's cores and memory in Ray (it is scheduled on one
placement-group bundle) and launches one Spark executor JVM with exactly those cores
and that heap, under :mod:`ray_on_spark.runtime.supervisor`: actor -> supervisor -> executor
JVM (-> its Python workers).  When the actor dies -- ``ray.kill``, a node failure,
``stop_spark()`` -- the executor dies with it (the supervisor tears the tree down, or, if
Ray SIGKILLs the supervisor too, ``PR_SET_PDEATHSIG`` and the supervisor's janitor do),
and the driver sees a lost executor.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ray_on_spark.errors import SparkOnRayStartError
from ray_on_spark.on_ray import cds
from ray_on_spark.runtime import procs
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.spark_env import java_env, spark_home

logger = logging.getLogger(__name__)

EXECUTOR_READY = "Successfully registered with driver"


@dataclass(frozen=True)
class ExecutorLaunch:
    """Everything an actor needs to launch its executor, decided by the driver."""

    driver_url: str
    app_id: str
    host: Optional[str]  # None: the actor's own node IP
    cores: int
    memory_mib: int
    java_options: List[str]  # module options and executor startup confs (-D...)
    secret: str
    env: Dict[str, str] = field(default_factory=dict)  # spark.executorEnv.*
    #: Where the executors' class-data archive lives (ray_on_spark.cds); None: not used.
    cds_root: Optional[str] = None
    #: GPUs per executor (spark.executor.resource.gpu.amount): the actor's Ray GPU ids become its addresses.
    gpus: int = 0


def gpu_resources_file(directory: str, gpu_ids: List[str]) -> str:
    """Spark's resources file (``--resourcesFile``) giving the executor exactly these GPU addresses."""
    path = os.path.join(directory, "resources.json")
    with open(path, "w") as f:
        json.dump([{"id": {"componentName": "spark.executor", "resourceName": "gpu"}, "addresses": gpu_ids}], f)
    return path


def executor_command(launch: ExecutorLaunch, java_home: str, host: str, executor_id: int,
                     resources_file: Optional[str] = None) -> List[str]:
    """The executor JVM's command line, as a standalone Worker would build it."""
    home = spark_home()
    java = os.path.join(java_home, "bin", "java")
    # The archive's own options go first, so a user's spark.executor.extraJavaOptions wins.
    archive = cds.executor_options(launch.cds_root, java, home, executor_id) if launch.cds_root else []
    return [
        java,
        "-cp", cds.executor_classpath(home),
        f"-Xmx{launch.memory_mib}M",
        *archive,
        *launch.java_options,
        "org.apache.spark.executor.CoarseGrainedExecutorBackend",
        "--driver-url", launch.driver_url,
        "--executor-id", str(executor_id),
        "--bind-address", host,
        "--hostname", host,
        "--cores", str(launch.cores),
        "--app-id", launch.app_id,
        "--resourceProfileId", "0",
        *(["--resourcesFile", resources_file] if resources_file else []),
    ]


class ExecutorActor:
    """One Spark executor's home in Ray; created by :class:`ray_on_spark.on_ray.session.SparkOnRay`.

    The executor JVM (``CoarseGrainedExecutorBackend``) is launched straight from the
    actor -- no standalone Worker JVM in between -- and registers with the driver like
    any executor; ``executor_cores`` and ``-Xmx`` are exactly the actor's reservation.
    """

    def __init__(self, index: int, temp_root: Optional[str] = None):
        self.index = index
        self.temp_root = temp_root
        self.node: Optional[SupervisedProcess] = None

    def start(self, launch: "ExecutorLaunch", timeout: float = 60.0) -> dict:
        """Start the executor; return once it has registered with the driver."""
        import ray

        host = launch.host or ray.util.get_node_ip_address()
        temp_dir = tempfile.mkdtemp(prefix=f"ros-spark-w{self.index}-", dir=self.temp_root)  # 0700
        env = java_env()
        env.update(launch.env)
        env.update({
            "_SPARK_AUTH_SECRET": launch.secret,  # Spark's own variable: never on a command line
            "SPARK_LOCAL_DIRS": temp_dir,  # shuffle and block files, private, removed with the actor
            "SPARK_EXECUTOR_DIRS": temp_dir,
            "TMPDIR": temp_dir,
        })
        resources_file = None
        if launch.gpus:  # Ray set CUDA_VISIBLE_DEVICES for this actor; Spark gets the same ids as addresses
            gpu_ids = [str(g) for g in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]
            if len(gpu_ids) < launch.gpus:
                raise SparkOnRayStartError(f"executor {self.index}'s actor got GPUs {gpu_ids} from Ray, fewer than "
                                           f"spark.executor.resource.gpu.amount={launch.gpus}")
            resources_file = gpu_resources_file(temp_dir, gpu_ids[:launch.gpus])
        cmd = executor_command(launch, env["JAVA_HOME"], host, self.index, resources_file)
        sup = supervisor_command(cmd, log=os.path.join(temp_dir, "executor.log"), cleanup_dir=temp_dir,
                                 start_timeout=timeout, what="Spark executor", ready_marker=EXECUTOR_READY, janitor=True)
        self.node = SupervisedProcess(sup, env, what="Spark executor", cwd=temp_dir)
        failure = self.node.wait_ready(timeout + 5)
        if failure is not None:
            self.node.stop()
            raise SparkOnRayStartError(f"Spark executor {self.index} on {host} did not start: {failure}")
        # The whole tree -- supervisor, its janitor, the executor JVM -- so that the driver can
        # wait for all of it even if this actor is killed: the janitor outlives a killed actor
        # until it has removed temp_dir, and stop_spark must not return before that.
        return {"index": self.index, "host": host, "actor_pid": os.getpid(),
                "processes": [(r.pid, r.create_time) for r in procs.tree(self.node.pid)]}

    def wait_exit(self) -> Optional[int]:
        """Block until this actor's executor ends; its exit code (None: it was never started).

        The session's keeper (:mod:`ray_on_spark.on_ray.replacement`) keeps one such call open per
        actor: it returns when the executor exits on its own, and fails when the actor dies.
        The actor runs with ``max_concurrency`` > 1, so ``stop`` still gets through meanwhile.
        """
        node = self.node
        if node is None:
            return None
        return node.proc.wait()

    def jvm_pids(self) -> List[int]:
        """Pids of the executor JVM under this actor (for tests and checks)."""
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
        """End the executor; True once every process of its tree is gone."""
        if self.node is None:
            return True
        tree = procs.tree(self.node.pid)
        self.node.stop(timeout)
        left = procs.wait_gone(tree, timeout)
        self.node = None
        return not left
