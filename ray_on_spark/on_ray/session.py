"""Spark on Ray (RayDP mode): :class:`SparkOnRay`, the object that owns one session's processes.

Mechanism (README, "Design: executors launched from Ray actors"): ``num_executors`` Ray
actors, one per bundle of a placement group, each launch one Spark executor JVM with
exactly that actor's cores and heap; the executors register with the driver like any
standalone executors.  A standalone Master is there only so that the standalone scheduler
backend has an application to register: it runs inside the driver's JVM when this call
starts that JVM, else as a JVM of its own.  Ray accounts for every executor's CPUs and
memory, the placement group gang-schedules them (or fails clearly), and the executors'
processes live and die with their actors.

Start-up overlaps what can overlap: the driver's JVM (py4j gateway) starts while Ray
reserves the placement group and starts the actors; the executors start as soon as the
SparkSession exists.  The JVMs it starts map class-data archives (``cds``) and defer C2
compilation of code that is hot only while they start (``jit``).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ray_on_spark import spark_env
from ray_on_spark.data import holders, ray_entry_points
from ray_on_spark.errors import SparkOnRayStartError
from ray_on_spark.on_ray import cds, jit
from ray_on_spark.on_ray.dynamic import DynamicExecutors
from ray_on_spark.on_ray.executor_actor import ExecutorActor, ExecutorLaunch
from ray_on_spark.on_ray.plan import ExecutorPlan
from ray_on_spark.on_ray.replacement import ExecutorKeeper
from ray_on_spark.runtime import procs
from ray_on_spark.runtime.ports import free_ports
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.runtime.waiting import poll_until
from ray_on_spark.spark_env import java_binary, java_env, spark_home

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession
    from ray.actor import ActorHandle
    from ray.util.placement_group import PlacementGroup

logger = logging.getLogger(__name__)

#: Heap of the standalone Master JVM (Spark's daemon default is 1g; it only keeps the app's registration).
MASTER_MEMORY = "256m"
MASTER_READY = "I have been elected leader"
#: How often init_spark logs that it still waits for Ray to place the executors.
_RESERVE_LOG_EVERY = 10.0
_MASTER_URL = re.compile(r"Starting Spark master at (spark://\S+)")



class SparkOnRay:
    """Owns one Spark-on-Ray cluster: master, placement group, actors, SparkSession, data holder."""

    def __init__(self, plan: ExecutorPlan, placement_group: Optional["PlacementGroup"] = None,
                 start_timeout: float = 90.0, reserve_timeout: float = 30.0):
        self.plan = plan
        self.start_timeout = start_timeout
        self.reserve_timeout = reserve_timeout
        self._user_pg = placement_group
        self.pg = placement_group
        self.actors: List["ActorHandle"] = []
        self.workers: List[dict] = []
        self.master: Optional[SupervisedProcess] = None  # a master JVM of its own, or
        self._master_rpc: Any = None  # the RpcEnv of a master inside the driver's JVM
        self.master_url: Optional[str] = None
        self.spark: Optional["SparkSession"] = None
        #: The master JVM's logs and work (0700), made only when the master needs a JVM of its own;
        #: its supervisor removes it even if the driver dies.
        self.temp_dir: Optional[str] = None
        self._records: List[procs.ProcessRecord] = []
        self._cpu_before: Optional[float] = None
        self._secret = secrets.token_hex(24)
        self.timings: Dict[str, float] = {}
        #: The holder of this session's converted data (ray_on_spark.data), made on the first conversion.
        self.data = holders.open_session_scope()
        self._entry_points = False  # whether start() routed Ray's from_spark / to_spark through ours
        self._keeper: Optional[ExecutorKeeper] = None
        self._dynamic: Optional[DynamicExecutors] = None  # under dynamic allocation, in the keeper's place

    @property
    def holder(self) -> Optional[holders.Holder]:
        """The Ray actor that owns this session's converted data, once a conversion made it."""
        return self.data.holder

    # ------------------------------------------------------------------ start
    def start(self) -> "SparkSession":
        import ray

        t0 = time.monotonic()
        host, worker_host = self._hosts()
        self._cpu_before = ray.available_resources().get("CPU", 0.0)
        # The master runs inside the driver's own JVM when this call starts that JVM (no
        # extra JVM; its web UI binds where SPARK_LOCAL_IP says).  When the JVM is already
        # running its environment cannot change, so the master gets a JVM of its own.
        in_driver = not spark_env.driver_jvm_running()
        driver_cds: List[str] = []
        if in_driver:
            launch_confs = {k: v for k, v in self.plan.configs.items() if k in JVM_LAUNCH_CONFS}
            if cds.enabled():  # the driver JVM gets its class-data archive too
                driver_cds = cds.jvm_options(cds.cache_root(), java_binary(), spark_home(), "driver", "d")
            ours = driver_cds + jit.startup_options()
            if ours:  # the user's options come last, so they win
                user = launch_confs.get("spark.driver.extraJavaOptions", "")
                launch_confs["spark.driver.extraJavaOptions"] = " ".join(
                    [shlex.quote(o) for o in ours] + ([user] if user else []))
            gateway = threading.Thread(target=_launch_gateway, args=(host, launch_confs), name="ros-gateway", daemon=True)
            gateway.start()
        else:
            self._start_master(host)
        indexes: List[int] = []
        if self.plan.dynamic is None:  # a fixed number: gang-reserved now, started while the driver comes up
            self._reserve()
            indexes = self.plan.bundle_indexes or list(range(self.plan.num_executors))
            for i, bundle in enumerate(indexes):
                self.actors.append(self._new_actor(bundle, i))
        if in_driver:
            gateway.join(self.start_timeout)
            if any(o.startswith("-XX:DumpLoadedClassList") for o in driver_cds):
                self._remember_driver_classpath()
            self.master_url = self._start_master_in_driver(host)
        else:
            self.master_url = self._wait_master()
        self.timings["master_s"] = time.monotonic() - t0
        self.spark = self._session(host)
        self.timings["session_s"] = time.monotonic() - t0
        launch = self._launch_spec(worker_host)
        if self.plan.dynamic is not None:
            self._start_dynamic(launch)
            self.timings["ready_s"] = time.monotonic() - t0
            self._entry_points = ray_entry_points.install()
            logger.info("Spark on Ray is up in %.1fs with dynamic allocation: %d executor(s) x %d cores now, "
                        "Spark adds and removes them (driver %s)", self.timings["ready_s"], self.executor_count(),
                        self.plan.executor_cores, self.spark.sparkContext.applicationId)
            return self.spark
        starts = [a.start.remote(launch, self.start_timeout) for a in self.actors]
        try:
            self.workers = ray.get(starts, timeout=self.start_timeout + 10)
        except ray.exceptions.GetTimeoutError:
            raise SparkOnRayStartError(
                f"Spark executors in Ray actors did not start within {self.start_timeout:.0f}s") from None
        except ray.exceptions.RayError as e:
            raise SparkOnRayStartError(f"a Spark executor in a Ray actor failed to start: {e}") from None
        for w in self.workers:
            self._records.extend(procs.ProcessRecord(*r) for r in w["processes"])
        self._wait_executors()
        self._keeper = ExecutorKeeper(
            self.actors, indexes, first_new_id=self.plan.num_executors, policy=self.plan.restarts,
            new_actor=lambda bundle, executor_id: self._start_actor(bundle, executor_id, launch),
            on_started=self._started, start_timeout=self.start_timeout)
        self._keeper.start()
        self.timings["ready_s"] = time.monotonic() - t0
        self._entry_points = ray_entry_points.install()  # ray.data.from_spark / Dataset.to_spark without RayDP
        logger.info("Spark on Ray is up in %.1fs: %d executors x %d cores (driver %s)", self.timings["ready_s"],
                    self.plan.num_executors, self.plan.executor_cores, self.spark.sparkContext.applicationId)
        return self.spark

    def _start_dynamic(self, launch: ExecutorLaunch) -> None:
        """Dynamic allocation: executors follow Spark's target (:mod:`ray_on_spark.on_ray.dynamic`);
        init_spark returns once Spark's initial executors registered."""
        assert self.spark is not None
        self._dynamic = DynamicExecutors(
            self.spark.sparkContext, self.plan.restarts,
            new_actor=lambda executor_id: self._start_actor(None, executor_id, launch),
            on_started=self._started, bundle=self.plan.bundle())
        self._dynamic.start()
        self._wait_executors(self.plan.initial_executors, self.reserve_timeout + self.start_timeout)

    def _new_actor(self, bundle: Optional[int], executor_id: int) -> "ActorHandle":
        """An executor actor on placement-group bundle ``bundle`` (None: wherever Ray has room); its
        executor gets id ``executor_id``."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        actor = self.plan.actor
        strategy = (None if bundle is None
                    else PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle))
        return ray.remote(ExecutorActor).options(
            num_cpus=actor.cpus,
            num_gpus=actor.gpus,
            resources=dict(actor.custom),
            memory=self.plan.executor_memory,
            max_restarts=0,
            max_concurrency=4,  # wait_exit stays open while stop and jvm_pids get through
            scheduling_strategy=strategy,
        ).remote(executor_id)

    def _start_actor(self, bundle: Optional[int], executor_id: int,
                     launch: ExecutorLaunch) -> Tuple["ActorHandle", Any]:
        """A replacement executor: its actor, and the call that returns once it registered with the driver."""
        actor = self._new_actor(bundle, executor_id)
        return actor, actor.start.remote(launch, self.start_timeout)

    def _started(self, info: Dict[str, Any]) -> None:
        """A replacement executor is up: its processes are the session's to wait for at stop."""
        self.workers.append(info)
        self._records.extend(procs.ProcessRecord(*r) for r in info["processes"])

    @property
    def executor_failure(self) -> Optional[Exception]:
        """Why lost executors are no longer replaced (``spark.executor.maxNumFailures`` reached), else None."""
        watcher = self._keeper or self._dynamic
        return watcher.failure if watcher is not None else None

    @property
    def replacements(self) -> List[Any]:
        """The executors replaced so far: lost id, new id, why, seconds until the new one registered, host."""
        return list(self._keeper.replacements) if self._keeper is not None else []

    def _remember_driver_classpath(self) -> None:
        """The driver archive must be built for exactly the classpath pyspark's launcher gave the JVM."""
        try:
            cds.remember_classpath(cds.cache_root(), java_binary(), spark_home(), "driver",
                                   spark_env.driver_jvm_classpath())
        except Exception as e:  # no archive for the driver then; nothing else changes
            logger.debug("driver classpath not recorded: %s", e)

    def _launch_spec(self, worker_host: Optional[str]) -> ExecutorLaunch:
        """What each actor needs to launch an executor of this application."""
        assert self.spark is not None
        sc = self.spark.sparkContext
        conf = dict(sc.getConf().getAll())
        options = spark_env.executor_startup_java_options(sc)
        options += jit.startup_options()  # before the user's own options, which win
        options += shlex.split(conf.get("spark.executor.extraJavaOptions", ""))
        env = {k[len("spark.executorEnv."):]: v for k, v in conf.items() if k.startswith("spark.executorEnv.")}
        env.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
        return ExecutorLaunch(
            driver_url=f"spark://CoarseGrainedScheduler@{conf['spark.driver.host']}:{conf['spark.driver.port']}",
            app_id=sc.applicationId,
            host=worker_host,
            cores=self.plan.executor_cores,
            memory_mib=self.plan.executor_memory_mib,
            java_options=options,
            secret=self._secret,
            env=env,
            cds_root=cds.cache_root() if cds.enabled() else None,
            gpus=self.plan.actor.gpus,
        )

    def _hosts(self) -> Tuple[str, Optional[str]]:
        """Loopback for everything when all Ray nodes are this host; the node IP otherwise."""
        import ray

        me = ray.util.get_node_ip_address()
        ips = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        if ips <= {me}:
            return "127.0.0.1", "127.0.0.1"
        return me, None  # each actor binds its own node's IP

    def _start_master(self, host: str) -> None:
        cmd = [
            os.path.join(spark_home(), "bin", "spark-class"), "org.apache.spark.deploy.master.Master",
            "--host", host, "--port", "0", "--webui-port", "0",
        ]
        self.temp_dir = tempfile.mkdtemp(prefix="ros-spark-m-")
        log = os.path.join(self.temp_dir, "master.log")
        sup = supervisor_command(cmd, log=log, cleanup_dir=self.temp_dir, start_timeout=self.start_timeout,
                                 what="Spark master", ready_marker=MASTER_READY)
        self.master = SupervisedProcess(sup, _master_env(host, self.temp_dir, self._secret), what="Spark master")
        self._master_log = log
        rec = procs.ProcessRecord.of(self.master.proc.pid)
        if rec:
            self._records.append(rec)

    def _start_master_in_driver(self, host: str) -> str:
        """Start a standalone Master in the driver's JVM (as Spark's local-cluster mode does)."""
        if not spark_env.driver_jvm_running():
            raise SparkOnRayStartError("the Spark driver's JVM did not start; see the errors above")
        for attempt in range(3):  # a port picked free can be taken before the master binds it
            (port,) = free_ports(1, host)
            try:
                self._master_rpc = spark_env.start_master_in_driver(host, port, self._secret)
            except Exception as e:
                if attempt == 2:
                    raise SparkOnRayStartError(f"the Spark master could not start on {host}: {e}") from None
                continue
            return f"spark://{host}:{port}"
        raise AssertionError("unreachable")

    def _wait_master(self) -> str:
        assert self.master is not None
        failure = self.master.wait_ready(self.start_timeout)
        if failure is not None:
            raise SparkOnRayStartError(f"the Spark master did not start: {failure}")
        with open(self._master_log, errors="replace") as f:
            m = _MASTER_URL.search(f.read())
        if not m:
            raise SparkOnRayStartError(f"the Spark master started but its URL is not in {self._master_log}")
        return m.group(1)

    def _reserve(self) -> None:
        """Gang-reserve every executor's bundle; wait up to ``reserve_timeout`` for room, saying what for.

        Ray places a placement group when it has room for all of it: other actors may be
        holding that room now, or an autoscaler may be adding nodes.  Every
        ``_RESERVE_LOG_EVERY`` seconds the wait is logged with what Ray has free; at the
        deadline the group is removed and a clear error says what Ray lacked.
        """
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        if self.pg is None:
            self.pg = placement_group(self.plan.bundles(), strategy=self.plan.strategy, name=f"ros-spark-{self.plan.app_name}")
        ready = self.pg.ready()
        t0 = time.monotonic()
        while True:
            left = self.reserve_timeout - (time.monotonic() - t0)
            try:
                ray.get(ready, timeout=max(0.0, min(_RESERVE_LOG_EVERY, left)))
                if time.monotonic() - t0 >= _RESERVE_LOG_EVERY:
                    logger.info("init_spark: Ray placed the executors after %.0fs", time.monotonic() - t0)
                return
            except ray.exceptions.GetTimeoutError:
                pass
            avail = ray.available_resources()
            if time.monotonic() - t0 < self.reserve_timeout:
                logger.info("init_spark waits for Ray to place %d executors x %s (free now: CPU=%g, memory=%.0f MiB); "
                            "%.0fs so far, gives up after reserve_timeout_s=%.0f", self.plan.num_executors,
                            self.plan.bundle(), avail.get("CPU", 0), avail.get("memory", 0) / 2**20,
                            time.monotonic() - t0, self.reserve_timeout)
                continue
            if self._user_pg is None:
                remove_placement_group(self.pg)
            self.pg = None
            raise SparkOnRayStartError(
                f"Ray could not reserve {self.plan.num_executors} executors x {self.plan.bundle()} within "
                f"{self.reserve_timeout:.0f}s: available now CPU={avail.get('CPU', 0):g}, "
                f"memory={avail.get('memory', 0) / 2**20:.0f} MiB. Free resources in Ray (other actors or "
                "placement groups hold them), ask for fewer/smaller executors, or wait longer "
                "(init_spark(..., reserve_timeout_s=600) while an autoscaler adds nodes)."
            ) from None

    def _session(self, host: str) -> "SparkSession":
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        confs = self.plan.spark_confs(self.master_url, host, os.environ.get("PYSPARK_PYTHON") or sys.executable)
        # pyspark takes the executors' Python from PYSPARK_PYTHON (default "python3", which
        # may lack pyspark's dependencies), not from spark.pyspark.python, in-process.
        os.environ["PYSPARK_PYTHON"] = confs["spark.pyspark.python"]
        for k, v in confs.items():
            builder = builder.config(k, v)
        # Set through py4j after the gateway is up, so the secret is never on a command line.
        builder = builder.config("spark.authenticate", "true").config("spark.authenticate.secret", self._secret)
        if self.plan.enable_hive:
            builder = builder.enableHiveSupport()
        return builder.getOrCreate()

    def _wait_executors(self, n: Optional[int] = None, timeout: Optional[float] = None) -> None:
        assert self.spark is not None
        sc = self.spark.sparkContext
        n = self.plan.num_executors if n is None else n
        timeout = self.start_timeout if timeout is None else timeout
        if poll_until(lambda: spark_env.registered_executors(sc) >= n, timeout=timeout, poll=0.05):
            return
        raise SparkOnRayStartError(
            f"only {spark_env.registered_executors(sc)} of {n} Spark executors registered within "
            f"{timeout:.0f}s; executor logs are in each actor's ros-spark-w* temp dir"
        )

    # ------------------------------------------------------------------ queries
    def executor_count(self) -> int:
        assert self.spark is not None
        return spark_env.registered_executors(self.spark.sparkContext)

    # ------------------------------------------------------------------ stop
    def stop(self, cleanup_data: bool = True, timeout: float = 30.0) -> None:
        """End the SparkSession, the actors' Spark processes, the master; give Ray its resources back."""
        import ray

        t0 = time.monotonic()
        try:
            self._stop_processes(timeout)
        finally:
            # Freed: the converted Datasets' blocks go with their owners (kept with cleanup_data=False).
            # The scope ends even when stopping failed part-way: no later conversion may use this session's holder.
            holders.close_session_scope(self.data, free=cleanup_data and ray.is_initialized())
            if self._entry_points:
                ray_entry_points.uninstall()
                self._entry_points = False
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if cds.enabled():  # the first session's executors recorded their classes: archive them for the next
            try:
                cds.build_in_background(cds.cache_root(), java_binary(), spark_home())
            except Exception as e:  # only a speed-up is lost
                logger.debug("class-data archive build not started: %s", e)
        self.timings["stop_s"] = time.monotonic() - t0
        logger.info("Spark on Ray stopped in %.1fs", self.timings["stop_s"])

    def _stop_processes(self, timeout: float) -> None:
        """The SparkSession, the executors and their actors, the master, the placement group, in that order."""
        import ray

        if self._keeper is not None:  # first: the actors stopped below are not losses to replace
            self._keeper.close()
        if self._dynamic is not None:
            self._dynamic.close()
            self.actors = self.actors + self._dynamic.actors()
        if self.spark is not None:
            try:
                self.spark.stop()
            except Exception as e:  # the JVM may already be gone at interpreter exit
                logger.warning("stopping the SparkSession failed: %s", e)
            self.spark = None
        if ray.is_initialized():
            stops = [a.stop.remote() for a in self.actors]
            try:
                ray.get(stops, timeout=timeout)
            except ray.exceptions.RayError as e:  # a dead actor took its processes with it
                logger.debug("stopping an executor actor: %s", e)
            for a in self.actors:
                ray.kill(a, no_restart=True)
        self.actors = []
        if self.master is not None:
            self.master.stop()
            self.master = None
        if self._master_rpc is not None:
            try:
                spark_env.stop_rpc_env(self._master_rpc)
            except Exception as e:  # the JVM may be gone at interpreter exit
                logger.debug("stopping the in-driver Spark master: %s", e)
            self._master_rpc = None
        left = procs.wait_gone(self._records, timeout)
        if left:
            logger.warning("Spark processes still alive after %.0fs: %s; killing them", timeout, left)
            procs.terminate(left, grace=1)
        if ray.is_initialized():
            if self.pg is not None and self._user_pg is None:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self.pg)
            self.pg = None
            self._wait_resources_back(timeout)

    def _wait_resources_back(self, timeout: float) -> None:
        import ray

        if self._cpu_before is None:
            return
        before = self._cpu_before
        if not poll_until(lambda: ray.available_resources().get("CPU", 0.0) >= before, timeout=timeout, poll=0.05):
            logger.warning("Ray's available CPUs did not come back to %g within %.0fs", before, timeout)


#: Driver confs that only take effect when the driver's JVM is launched.
JVM_LAUNCH_CONFS = ("spark.driver.memory", "spark.driver.extraJavaOptions", "spark.driver.extraClassPath",
                    "spark.driver.extraLibraryPath", "spark.jars", "spark.jars.packages", "spark.jars.repositories")


def _master_env(host: str, temp_dir: str, secret: str) -> Dict[str, str]:
    """Environment of a standalone Master JVM: bound to ``host``, logs in ``temp_dir``.

    The shared secret goes in ``_SPARK_AUTH_SECRET`` (Spark's own variable), never on a
    command line, where other users could read it.
    """
    env = java_env()
    env.update({
        "SPARK_LOCAL_IP": host,
        "SPARK_LOG_DIR": temp_dir,
        "SPARK_NO_DAEMONIZE": "1",
        "SPARK_DAEMON_MEMORY": MASTER_MEMORY,
        "_SPARK_AUTH_SECRET": secret,
        "SPARK_MASTER_OPTS": "-Dspark.authenticate=true",
        "PYSPARK_PYTHON": sys.executable,
        "TMPDIR": temp_dir,
    })
    return env


def _launch_gateway(host: str, launch_confs: Dict[str, str]) -> None:
    """Start pyspark's JVM (py4j gateway) now, while Ray places the actors.

    ``launch_confs`` are the user's confs that shape the JVM itself (heap, JVM options,
    jars).  SPARK_LOCAL_IP is set for the JVM only: the in-driver master's web UI binds there.
    """
    try:
        spark_env.launch_driver_jvm(launch_confs, host)
    except Exception as e:  # getOrCreate will raise it again, in the caller's thread
        logger.warning("launching the Spark driver's JVM failed: %s", e)
