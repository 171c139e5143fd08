"""Spark on Ray (RayDP mode): ``init_spark`` / ``stop_spark`` and the object that owns it all.

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

import atexit
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
from typing import Dict, List, Mapping, Optional, Sequence

from ray_on_spark import cds, jit, procs
from ray_on_spark.cluster import RayOnSparkError
from ray_on_spark.local_standalone import java_env, spark_home
from ray_on_spark.ports import free_ports
from ray_on_spark.spark_on_ray_plan import ExecutorPlan, check_fits, plan_executors
from ray_on_spark.spark_worker_actor import ExecutorLaunch, SparkWorkerActor, daemon_env, supervised
from ray_on_spark.worker_task import NodeProcess

logger = logging.getLogger(__name__)

MASTER_READY = "I have been elected leader"
_MASTER_URL = re.compile(r"Starting Spark master at (spark://\S+)")

_ACTIVE: Optional["SparkOnRay"] = None
_LOCK = threading.RLock()


class SparkOnRay:
    """Owns one Spark-on-Ray cluster: master, placement group, actors, SparkSession, data holder."""

    def __init__(self, plan: ExecutorPlan, placement_group=None, start_timeout: float = 90.0):
        self.plan = plan
        self.start_timeout = start_timeout
        self._user_pg = placement_group
        self.pg = placement_group
        self.actors: list = []
        self.workers: List[dict] = []
        self.master: Optional[NodeProcess] = None  # a master JVM of its own, or
        self._master_rpc = None  # the RpcEnv of a master inside the driver's JVM
        self.master_url: Optional[str] = None
        self.spark = None
        #: The master JVM's logs and work (0700), made only when the master needs a JVM of its own;
        #: its supervisor removes it even if the driver dies.
        self.temp_dir: Optional[str] = None
        self._records: List[procs.ProcessRecord] = []
        self._cpu_before: Optional[float] = None
        self._secret = secrets.token_hex(24)
        self.timings: Dict[str, float] = {}
        self.holder = None  # the Ray actor owning converted data (ray_on_spark.dataset)

    # ------------------------------------------------------------------ start
    def start(self):
        import ray

        t0 = time.monotonic()
        host, worker_host = self._hosts()
        self._cpu_before = ray.available_resources().get("CPU", 0.0)
        from pyspark import SparkContext

        # The master runs inside the driver's own JVM when this call starts that JVM (no
        # extra JVM; its web UI binds where SPARK_LOCAL_IP says).  When the JVM is already
        # running its environment cannot change, so the master gets a JVM of its own.
        in_driver = SparkContext._gateway is None
        driver_cds: List[str] = []
        if in_driver:
            launch_confs = {k: v for k, v in self.plan.configs.items() if k in JVM_LAUNCH_CONFS}
            if cds.enabled():  # the driver JVM gets its class-data archive too
                driver_cds = cds.jvm_options(cds.cache_root(), _java(), spark_home(), "driver", "d")
            ours = driver_cds + jit.startup_options()
            if ours:  # the user's options come last, so they win
                user = launch_confs.get("spark.driver.extraJavaOptions", "")
                launch_confs["spark.driver.extraJavaOptions"] = " ".join(
                    [shlex.quote(o) for o in ours] + ([user] if user else []))
            gateway = threading.Thread(target=_launch_gateway, args=(host, launch_confs), name="ros-gateway", daemon=True)
            gateway.start()
        else:
            self._start_master(host)
        self._reserve()
        actor_cls = ray.remote(SparkWorkerActor)
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        indexes = self.plan.bundle_indexes or list(range(self.plan.num_executors))
        for i, bundle in enumerate(indexes):
            self.actors.append(
                actor_cls.options(
                    num_cpus=self.plan.executor_cores,
                    memory=self.plan.executor_memory,
                    max_restarts=0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle),
                ).remote(i)
            )
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
        starts = [a.start.remote(launch, self.start_timeout) for a in self.actors]
        try:
            self.workers = ray.get(starts, timeout=self.start_timeout + 10)
        except ray.exceptions.GetTimeoutError:
            raise RayOnSparkError(f"Spark executors in Ray actors did not start within {self.start_timeout:.0f}s") from None
        except ray.exceptions.RayError as e:
            raise RayOnSparkError(f"a Spark executor in a Ray actor failed to start: {e}") from None
        for w in self.workers:
            self._records.extend(procs.ProcessRecord(*r) for r in w["processes"])
        self._wait_executors()
        self.timings["ready_s"] = time.monotonic() - t0
        logger.info("Spark on Ray is up in %.1fs: %d executors x %d cores (driver %s)", self.timings["ready_s"],
                    self.plan.num_executors, self.plan.executor_cores, self.spark.sparkContext.applicationId)
        return self.spark

    def _remember_driver_classpath(self) -> None:
        """The driver archive must be built for exactly the classpath pyspark's launcher gave the JVM."""
        from pyspark import SparkContext

        try:
            import psutil

            cmd = psutil.Process(SparkContext._gateway.proc.pid).cmdline()
            cds.remember_classpath(cds.cache_root(), _java(), spark_home(), "driver", cmd[cmd.index("-cp") + 1])
        except Exception as e:  # no archive for the driver then; nothing else changes
            logger.debug("driver classpath not recorded: %s", e)

    def _launch_spec(self, worker_host: Optional[str]) -> ExecutorLaunch:
        """What each actor needs to launch an executor of this application."""
        sc = self.spark.sparkContext
        jvm = sc._jvm
        conf = dict(sc._conf.getAll())
        options = shlex.split(jvm.org.apache.spark.launcher.JavaModuleOptions.defaultModuleOptions())
        for key, value in sorted(conf.items()):
            # The confs an executor needs before it can talk to the driver (auth, rpc, ports);
            # Spark itself leaves the secret out (it travels in _SPARK_AUTH_SECRET).
            if jvm.org.apache.spark.SparkConf.isExecutorStartupConf(key) and "secret" not in key:
                options.append(f"-D{key}={value}")
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
        )

    def _hosts(self):
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
        sup = supervised(cmd, log=log, temp_dir=self.temp_dir, what="Spark master", marker=MASTER_READY,
                         timeout=self.start_timeout)
        env = daemon_env(host, self.temp_dir, self._secret, "SPARK_MASTER_OPTS")
        self.master = NodeProcess(sup, env, what="Spark master")
        self._master_log = log
        rec = procs.ProcessRecord.of(self.master.proc.pid)
        if rec:
            self._records.append(rec)

    def _start_master_in_driver(self, host: str) -> str:
        """Start a standalone Master in the driver's JVM (as Spark's local-cluster mode does)."""
        from pyspark import SparkContext

        if SparkContext._jvm is None:
            raise RayOnSparkError("the Spark driver's JVM did not start; see the errors above")
        jvm = SparkContext._jvm
        try:  # it has no workers by design; its "no worker can run this app" warning is noise
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
                "org.apache.spark.deploy.master.Master", jvm.org.apache.logging.log4j.Level.ERROR)
        except Exception as e:
            logger.debug("quieting the in-driver master's log: %s", e)
        conf = jvm.org.apache.spark.SparkConf(False)
        conf.set("spark.authenticate", "true").set("spark.authenticate.secret", self._secret)
        for attempt in range(3):  # a port picked free can be taken before the master binds it
            (port,) = free_ports(1, host)
            try:
                started = jvm.org.apache.spark.deploy.master.Master.startRpcEnvAndEndpoint(host, port, 0, conf)
            except Exception as e:
                if attempt == 2:
                    raise RayOnSparkError(f"the Spark master could not start on {host}: {e}") from None
                continue
            self._master_rpc = started._1()
            return f"spark://{host}:{port}"
        raise AssertionError("unreachable")

    def _wait_master(self) -> str:
        failure = self.master.wait_ready(self.start_timeout)
        if failure is not None:
            raise RayOnSparkError(f"the Spark master did not start: {failure}")
        with open(self._master_log, errors="replace") as f:
            m = _MASTER_URL.search(f.read())
        if not m:
            raise RayOnSparkError(f"the Spark master started but its URL is not in {self._master_log}")
        return m.group(1)

    def _reserve(self) -> None:
        """Gang-reserve every executor's CPUs and memory, or fail saying what Ray lacks."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        if self.pg is None:
            self.pg = placement_group(self.plan.bundles(), strategy=self.plan.strategy, name=f"ros-spark-{self.plan.app_name}")
        try:
            ray.get(self.pg.ready(), timeout=min(30.0, self.start_timeout))
        except ray.exceptions.GetTimeoutError:
            avail = ray.available_resources()
            if self._user_pg is None:
                remove_placement_group(self.pg)
            self.pg = None
            raise RayOnSparkError(
                f"Ray could not reserve {self.plan.num_executors} executors x ({self.plan.executor_cores} CPU, "
                f"{self.plan.executor_memory_mib} MiB) within 30s: available now CPU={avail.get('CPU', 0):g}, "
                f"memory={avail.get('memory', 0) / 2**20:.0f} MiB. Free resources in Ray (other actors or "
                "placement groups hold them) or ask for fewer/smaller executors."
            ) from None

    def _session(self, host: str):
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

    def _wait_executors(self) -> None:
        sc = self.spark.sparkContext
        deadline = time.monotonic() + self.start_timeout
        while True:
            n = sc._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
            if n >= self.plan.num_executors:
                return
            if time.monotonic() > deadline:
                raise RayOnSparkError(
                    f"only {n} of {self.plan.num_executors} Spark executors registered within {self.start_timeout:.0f}s; "
                    f"executor logs are in each actor's ros-spark-w* temp dir"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------------ queries
    def executor_count(self) -> int:
        return self.spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1

    # ------------------------------------------------------------------ stop
    def stop(self, cleanup_data: bool = True, timeout: float = 30.0) -> None:
        """End the SparkSession, the actors' Spark processes, the master; give Ray its resources back."""
        import ray

        t0 = time.monotonic()
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
                logger.debug("stopping a Spark worker actor: %s", e)
            for a in self.actors:
                ray.kill(a, no_restart=True)
        self.actors = []
        if self.master is not None:
            self.master.stop()
            self.master = None
        if self._master_rpc is not None:
            try:
                self._master_rpc.shutdown()
                self._master_rpc.awaitTermination()
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
            if cleanup_data and self.holder is not None:
                self.holder.kill()  # the converted Datasets' blocks are freed with their owner
                self.holder = None
            self._wait_resources_back(timeout)
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if cds.enabled():  # the first session's executors recorded their classes: archive them for the next
            try:
                cds.build_in_background(cds.cache_root(), _java(), spark_home())
            except Exception as e:  # only a speed-up is lost
                logger.debug("class-data archive build not started: %s", e)
        self.timings["stop_s"] = time.monotonic() - t0
        logger.info("Spark on Ray stopped in %.1fs", self.timings["stop_s"])

    def _wait_resources_back(self, timeout: float) -> None:
        import ray

        if self._cpu_before is None:
            return
        deadline = time.monotonic() + timeout
        while ray.available_resources().get("CPU", 0.0) < self._cpu_before:
            if time.monotonic() > deadline:
                logger.warning("Ray's available CPUs did not come back to %g within %.0fs", self._cpu_before, timeout)
                return
            time.sleep(0.05)


#: Driver confs that only take effect when the driver's JVM is launched.
JVM_LAUNCH_CONFS = ("spark.driver.memory", "spark.driver.extraJavaOptions", "spark.driver.extraClassPath",
                    "spark.driver.extraLibraryPath", "spark.jars", "spark.jars.packages", "spark.jars.repositories")


def _java() -> str:
    return os.path.join(java_env()["JAVA_HOME"], "bin", "java")


def _launch_gateway(host: str, launch_confs: Dict[str, str]) -> None:
    """Start pyspark's JVM (py4j gateway) now, while Ray places the actors.

    ``launch_confs`` are the user's confs that shape the JVM itself (heap, JVM options,
    jars).  SPARK_LOCAL_IP is set for the JVM only: the in-driver master's web UI binds there.
    """
    from pyspark import SparkContext

    try:
        with SparkContext._lock:
            saved = os.environ.get("SPARK_LOCAL_IP")
            os.environ["SPARK_LOCAL_IP"] = host
            try:
                from pyspark import SparkConf

                conf = SparkConf(loadDefaults=False)
                for key, value in launch_confs.items():
                    conf.set(key, value)
                SparkContext._ensure_initialized(conf=conf)
            finally:
                if saved is None:
                    os.environ.pop("SPARK_LOCAL_IP", None)
                else:
                    os.environ["SPARK_LOCAL_IP"] = saved
    except Exception as e:  # getOrCreate will raise it again, in the caller's thread
        logger.warning("launching the Spark driver's JVM failed: %s", e)


def init_spark(
    app_name: str,
    num_executors: int,
    executor_cores: int,
    executor_memory,
    enable_hive: bool = False,
    placement_group_strategy: Optional[str] = None,
    placement_group=None,
    placement_group_bundle_indexes: Optional[Sequence[int]] = None,
    configs: Optional[Mapping[str, object]] = None,
):
    """Start a SparkSession whose executors live in Ray actors (RayDP's ``init_spark`` arguments).

    Connects to Ray first if needed (``ray.init()``, which honours ``RAY_ADDRESS``).  All
    arguments are checked before anything starts; on a failed start everything started
    is stopped again.  Returns the SparkSession; :func:`stop_spark` ends it.
    """
    global _ACTIVE
    plan = plan_executors(
        app_name, num_executors, executor_cores, executor_memory, configs, placement_group_strategy,
        placement_group_bundle_indexes, has_placement_group=placement_group is not None, enable_hive=enable_hive,
    )
    with _LOCK:
        import ray

        if not ray.is_initialized():
            ray.init(log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        check_fits(plan, ray.cluster_resources(), [n["Resources"].get("CPU", 0.0) for n in nodes])
        if placement_group is not None and max(plan.bundle_indexes or [0]) >= placement_group.bundle_count:
            raise ValueError(
                f"placement_group_bundle_indexes={plan.bundle_indexes} name bundles the placement group does not "
                f"have (it has {placement_group.bundle_count}); use indexes below {placement_group.bundle_count}."
            )
        if _ACTIVE is not None:
            raise RayOnSparkError(
                f"a Spark-on-Ray session ({_ACTIVE.plan.app_name!r}) is already running; call "
                "ray_on_spark.stop_spark() first."
            )
        cluster = SparkOnRay(plan, placement_group)
        try:
            spark = cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _ACTIVE = cluster
        return spark


def stop_spark(cleanup_data: bool = True) -> None:
    """Stop the Spark-on-Ray session; with ``cleanup_data=False`` converted Datasets stay readable."""
    global _ACTIVE
    with _LOCK:
        cluster, _ACTIVE = _ACTIVE, None
        if cluster is not None:
            cluster.stop(cleanup_data=cleanup_data)


def active_spark() -> Optional[SparkOnRay]:
    """The running Spark-on-Ray cluster, if any."""
    return _ACTIVE


@atexit.register
def _stop_at_exit() -> None:
    try:
        stop_spark()
    except Exception as e:
        logger.warning("stopping Spark on Ray at exit failed: %s", e)
