"""The one seam to pyspark's internals: the JVM behind a SparkContext, DataFrame and RDD.

Everything that goes through ``_jvm``, ``_jsc``, ``_jdf``, ``_gateway`` or another private
pyspark attribute is a named function here; the rest of the library reads plain Python
values. A Spark upgrade that moves one of them breaks this module only.

Also where the library finds Spark and Java on this machine (:func:`spark_home`,
:func:`java_env`), for the JVMs it starts itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ray_on_spark.errors import NoFreeSparkSlotsError, NoSparkSessionError, RayOnSparkError, SparkConnectSessionError
from ray_on_spark.runtime.units import parse_memory
from ray_on_spark.runtime.waiting import poll_until

if TYPE_CHECKING:  # pragma: no cover
    from pyspark import RDD, SparkContext
    from pyspark.resource import ResourceProfile
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

logger = logging.getLogger(__name__)

#: A py4j proxy of a JVM object (a plan node, a class, an RpcEnv): used only through this module.
JavaObject = Any


# ---------------------------------------------------------------- Spark and Java on this machine
def spark_home() -> str:
    """The Spark installation pyspark brings (its jars, bin/spark-class)."""
    import pyspark

    return os.path.dirname(pyspark.__file__)


def java_env() -> Dict[str, str]:
    """Environment for the Spark JVMs the library starts: JAVA_HOME found from `java` on PATH if unset."""
    env = dict(os.environ)
    if not env.get("JAVA_HOME"):
        java = shutil.which("java")
        if java is None:
            raise RayOnSparkError("Java 17 is needed to run Spark: install it (e.g. apt-get install openjdk-17-jre-headless).")
        env["JAVA_HOME"] = os.path.dirname(os.path.dirname(os.path.realpath(java)))
    env["SPARK_HOME"] = spark_home()
    env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON", sys.executable)
    return env


def java_binary() -> str:
    """The ``java`` the Spark JVMs run with."""
    return os.path.join(java_env()["JAVA_HOME"], "bin", "java")


# ---------------------------------------------------------------- the running application
def is_spark_connect(spark: Optional[object] = None) -> bool:
    """Whether ``spark`` is a Spark Connect session, or (no session given) this Python is in Connect mode.

    A Connect session (``pyspark.sql.connect``: Databricks serverless and shared access mode,
    ``SparkSession.builder.remote(...)``) is a client of a server elsewhere: no SparkContext,
    no barrier jobs, no JVM in this process.
    """
    if spark is not None and type(spark).__module__.startswith("pyspark.sql.connect"):
        return True
    if spark is None:
        try:
            from pyspark.sql.utils import is_remote
        except ImportError:  # pragma: no cover  (every supported pyspark has it)
            return False
        return bool(is_remote())
    return False


def refuse_spark_connect(spark: Optional[object], what: str) -> None:
    """Raise :class:`SparkConnectSessionError` at once when ``spark`` is a Connect session, or when there is
    none and this Python is in Connect mode (a new session would be one). A classic session is trusted."""
    if is_spark_connect(spark) or (spark is None and is_spark_connect(None)):
        raise SparkConnectSessionError(
            f"{what} needs a classic SparkSession with a SparkContext in this process, and this is a Spark Connect "
            "session (pyspark.sql.connect; Databricks serverless compute and shared access mode work this way), "
            "which has none. Use a classic session: SparkSession.builder.master(...).getOrCreate() without "
            "SPARK_REMOTE / .remote(...); on Databricks, a classic cluster in dedicated (single user) access mode."
        )


def active_spark() -> "SparkSession":
    """The active classic SparkSession, or a clear error saying how to get one."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    refuse_spark_connect(spark, "ray_on_spark")
    if spark is None:
        raise NoSparkSessionError(
            "No active SparkSession: create one first, e.g. "
            "`SparkSession.builder.master('spark://127.0.0.1:7077').getOrCreate()` "
            "(on Databricks the notebook's `spark` is used automatically)."
        )
    return spark


def master_kind(master: str) -> str:
    """'standalone', 'local-cluster', 'local', 'yarn', or 'unsupported'."""
    if master.startswith("spark://"):
        return "standalone"
    if master.startswith("local-cluster["):
        return "local-cluster"
    if master == "local" or master.startswith("local["):
        return "local"
    if master == "yarn":
        return "yarn"
    return "unsupported"


def conf_get(sc: "SparkContext", key: str, default: Optional[str] = None) -> Optional[str]:
    """One conf of the running context, read from the JVM's live conf in one or two py4j calls.

    ``sc.getConf()`` copies the whole conf, one py4j call per entry each way: 17 reads while
    planning a cluster took ~1,900 calls and ~0.2 s of the driver JVM's CPU.
    """
    return sc._conf.get(key, default)


@dataclass(frozen=True)
class BroadcastWatch:
    """Whether Spark's JVM still refers to a broadcast (see ``data/lifetimes.py``).

    It holds no reference to the broadcast itself: pyspark's Broadcast object would pin its JVM
    object (through py4j) for as long as the watch lives.
    """

    still_referenced: Callable[[], bool]  # False once the JVM has collected it (a WeakReference)
    collect_garbage: Callable[[], None]  # System.gc() in that JVM: a hint, as Spark's ContextCleaner gives
    jvm_key: int  # the same for every broadcast of one JVM


def watched_broadcast(sc: "SparkContext", value: Any) -> Tuple[Any, BroadcastWatch]:
    """``sc.broadcast(value)`` (put it in a function's closure: every plan of that function holds
    it), and a watch on its JVM object through a ``java.lang.ref.WeakReference``."""
    bc = sc.broadcast(value)
    jvm = sc._jvm
    reference = jvm.java.lang.ref.WeakReference(bc._jbroadcast)
    return bc, BroadcastWatch(lambda: reference.get() is not None, lambda: jvm.java.lang.System.gc(), id(jvm))


def task_cpus(sc: "SparkContext") -> int:
    return int(conf_get(sc, "spark.task.cpus", "1") or "1")


def task_gpus(sc: "SparkContext") -> float:
    return float(conf_get(sc, "spark.task.resource.gpu.amount", "0") or "0")


@dataclass(frozen=True)
class ExecutorMemory:
    """An executor's memory confs in bytes (None: unset), to size what it takes on its host."""

    heap: int
    overhead: Optional[int]
    overhead_factor: float
    pyspark: int


def executor_memory(sc: "SparkContext") -> ExecutorMemory:
    """``spark.executor.memory``, ``memoryOverhead``/``memoryOverheadFactor`` and ``pyspark.memory``."""
    heap = parse_memory(conf_get(sc, "spark.executor.memory", "1g"), name="spark.executor.memory", default_unit="m")
    overhead_s = conf_get(sc, "spark.executor.memoryOverhead")
    py_s = conf_get(sc, "spark.executor.pyspark.memory")
    return ExecutorMemory(
        heap=heap,
        overhead=parse_memory(overhead_s, default_unit="m") if overhead_s else None,
        overhead_factor=float(conf_get(sc, "spark.executor.memoryOverheadFactor", "0.1") or "0.1"),
        pyspark=parse_memory(py_s, default_unit="m") if py_s else 0,
    )


def driver_memory(sc: "SparkContext") -> int:
    return parse_memory(conf_get(sc, "spark.driver.memory", "1g"), name="spark.driver.memory", default_unit="m")


def driver_host(sc: "SparkContext") -> str:
    """The driver's address as executors see it (where the Ray head will listen)."""
    host = conf_get(sc, "spark.driver.host") or socket.gethostname()
    return socket.gethostbyname(host)


def driver_gpu_addresses(sc: "SparkContext") -> List[str]:
    """GPU addresses Spark assigned to the driver (spark.driver.resource.gpu.*), in order."""
    info = (sc.resources or {}).get("gpu")
    return list(info.addresses) if info is not None else []


def executor_cores_conf(sc: "SparkContext") -> Optional[int]:
    """``spark.executor.cores`` when set (standalone's default is every core of the worker: None)."""
    raw = conf_get(sc, "spark.executor.cores")
    return int(raw) if raw and raw.strip().isdigit() else None


def executor_gpu_amount(sc: "SparkContext") -> int:
    """``spark.executor.resource.gpu.amount`` (0 when unset)."""
    return int(float(conf_get(sc, "spark.executor.resource.gpu.amount", "0") or "0"))


def dynamic_allocation(sc: "SparkContext") -> bool:
    return (conf_get(sc, "spark.dynamicAllocation.enabled", "false") or "false").lower() == "true"


def registration_window_s(sc: "SparkContext") -> float:
    """``spark.scheduler.maxRegisteredResourcesWaitingTime`` in seconds (Spark's executor registration window)."""
    raw = conf_get(sc, "spark.scheduler.maxRegisteredResourcesWaitingTime", "30s") or "30s"
    return float(raw[:-2]) / 1000 if raw.endswith("ms") else float(raw.rstrip("s"))


def task_resource_profile(num_cpus: int, num_gpus: int) -> "ResourceProfile":
    """A stage-level TaskResourceProfile asking ``num_cpus`` (and GPUs) per task."""
    from pyspark.resource import ResourceProfileBuilder, TaskResourceRequests

    req = TaskResourceRequests().cpus(num_cpus)
    if num_gpus > 0:
        req = req.resource("gpu", num_gpus)
    return ResourceProfileBuilder().require(req).build


def max_concurrent_tasks(sc: "SparkContext", profile: Optional["ResourceProfile"] = None) -> int:
    """How many tasks of ``profile`` the registered executors can run at once."""
    jsc = sc._jsc.sc()
    if profile is None:
        jprofile = jsc.resourceProfileManager().defaultResourceProfile()
    else:
        jprofile = profile._java_resource_profile
        if jprofile is None:  # built before the SparkContext existed
            jprofile = jsc.resourceProfileManager().defaultResourceProfile()
        else:
            # Spark only knows a profile once an RDD uses it; counting slots needs it registered.
            jsc.resourceProfileManager().addResourceProfile(jprofile)
    return int(jsc.maxNumConcurrentTasks(jprofile))


# ---------------------------------------------------------------- task slots held for ever
@dataclass(frozen=True)
class HeldSlots:
    """Executor cores a long-running Spark job of this process holds (a Ray cluster's worker nodes)."""

    what: str  # e.g. "Ray cluster 1a2b3c4d's 2 worker node(s) of 1 CPU"
    cores: Callable[[], int]  # held right now (a cluster's count changes as it heals or scales)
    fix: str  # how to leave a slot free, in the owner's own arguments


_HELD: Dict[str, HeldSlots] = {}


def hold_slots(owner: str, held: HeldSlots) -> None:
    """Note that ``owner``'s job holds executor cores until :func:`release_slots` (see :func:`require_free_slot`)."""
    _HELD[owner] = held


def release_slots(owner: str) -> None:
    _HELD.pop(owner, None)


def require_free_slot(sc: "SparkContext", what: str) -> None:
    """Raise :class:`NoFreeSparkSlotsError` when ``what`` (a Spark job) could never get a task slot.

    Why: a Ray-on-Spark cluster's barrier job holds its slots for as long as the cluster runs. A
    conversion is a Spark job too; with every slot held it waits for ever (Spark neither fails nor
    warns), which users saw as a hung notebook. Other jobs' slots free up, so only the slots of
    such long-running jobs count. With dynamic allocation Spark may add executors: no refusal.
    Counted in cores over all executors: exact when the held tasks leave whole slots per executor.
    """
    held = [(h, h.cores()) for h in _HELD.values()]
    held = [(h, c) for h, c in held if c > 0]
    if not held or dynamic_allocation(sc):
        return
    task_cpus = int(conf_get(sc, "spark.task.cpus", "1") or "1")
    total = max_concurrent_tasks(sc) * task_cpus
    taken = sum(c for _, c in held)
    if total - taken >= task_cpus:
        return
    holders = "; ".join(f"{h.what} hold {c} of them" for h, c in held)
    fixes = " or ".join(h.fix for h, _ in held)
    raise NoFreeSparkSlotsError(
        f"{what} runs as a Spark job, and it could never start: the executors have {total} core(s) and "
        f"{holders} for as long as they run (spark.task.cpus={task_cpus}). Leave a Spark slot free: {fixes}; "
        f"or add an executor (a Spark worker) with free cores."
    )


def wait_for_slots(sc: "SparkContext", needed: int, profile: Optional["ResourceProfile"], timeout: float) -> int:
    """Wait until executors offer ``needed`` concurrent task slots; return what they offer.

    Executors register with the driver some seconds after the SparkSession starts;
    a barrier job submitted before that is rejected by Spark (and retried for minutes).
    """
    poll_until(lambda: max_concurrent_tasks(sc, profile) >= needed, timeout=timeout, poll=0.2)
    return max_concurrent_tasks(sc, profile)


def executor_count(sc: "SparkContext") -> int:
    """Executors registered right now (the driver excluded), as the status tracker reports them.

    The JVM's tracker: pyspark 3.5's Python ``StatusTracker`` has no ``getExecutorInfos``.
    """
    infos = sc._jsc.sc().statusTracker().getExecutorInfos()
    return max(0, len(infos) - 1)


def registered_executors(sc: "SparkContext") -> int:
    """Executors registered with the driver's block manager (the driver excluded): the earliest count."""
    return int(sc._jsc.sc().getExecutorMemoryStatus().size()) - 1


def context_stopped(sc: "SparkContext") -> bool:
    """Whether ``sc`` was stopped (pyspark drops its Java context then)."""
    return sc._jsc is None


def executor_allocation_target(sc: "SparkContext") -> Optional[int]:
    """How many executors Spark's dynamic allocation wants now (default resource profile); None without it.

    Spark's ``ExecutorAllocationManager`` keeps this target (``numExecutorsTargetPerResourceProfileId``,
    public in the bytecode) and sends it to the cluster manager; reading it is what a cluster
    manager's ``doRequestTotalExecutors`` would be told.
    """
    manager = sc._jsc.sc().executorAllocationManager()
    if manager.isEmpty():
        return None
    target = manager.get().numExecutorsTargetPerResourceProfileId().get(0)  # DEFAULT_RESOURCE_PROFILE_ID
    return int(target.get()) if target.isDefined() else 0


def executor_ids(sc: "SparkContext") -> List[str]:
    """Ids of the executors registered with the driver's scheduler."""
    ids = sc._jsc.sc().schedulerBackend().getExecutorIds()
    return [str(ids.apply(i)) for i in range(ids.size())]


def executors_being_removed(sc: "SparkContext") -> List[str]:
    """Registered executors that the driver no longer counts as active: Spark asked to kill them
    (dynamic allocation found them idle), or lost them and waits for the reason."""
    backend = sc._jsc.sc().schedulerBackend()
    return [i for i in executor_ids(sc) if not backend.isExecutorActive(i)]


def executor_hosts(sc: "SparkContext") -> List[str]:
    """The hosts of the executors and of the driver, as Spark names them."""
    return sorted({e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()})


def spark_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread for Spark jobs: it inherits this thread's job group and properties (pyspark's
    ``InheritableThread``) while a SparkContext is active; a plain thread when none is (nothing to inherit,
    and pyspark's would refuse to start)."""
    from pyspark import InheritableThread, SparkContext

    if SparkContext._active_spark_context is not None:
        return InheritableThread(target=target, name=name, daemon=True)
    return threading.Thread(target=target, name=name, daemon=True)


@contextlib.contextmanager
def job_description(sc: "SparkContext", text: str) -> Iterator[None]:
    """Jobs this thread submits meanwhile show ``text`` in the Spark UI; the earlier description comes back after."""
    saved = sc.getLocalProperty("spark.job.description")
    sc.setJobDescription(text)
    try:
        yield
    finally:
        sc.setLocalProperty("spark.job.description", saved)  # type: ignore[arg-type]  (None removes it)


def job_group_running(sc: "SparkContext", group: str) -> bool:
    """True while a job of the group has been submitted and has not ended.

    Job status, unlike a stage's task counts, is never stale: Spark's status store may
    skip writing a task start that follows its stage's start within
    ``spark.ui.liveUpdate.period``, and an idle application never flushes it.
    """
    tracker = sc.statusTracker()
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is not None and job.status == "RUNNING":
            return True
    return False


def job_has_active_tasks(sc: "SparkContext", group: str) -> bool:
    """True while any stage of the job group still has running tasks."""
    tracker = sc.statusTracker()
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        if job is None:
            continue
        for stage_id in job.stageIds:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None and stage.numActiveTasks > 0:
                return True
    return False


# ---------------------------------------------------------------- Arrow types, where pyspark 3.5 and 4.x differ
def _accepted_keywords(function: Callable[..., Any], keywords: Dict[str, Any]) -> Dict[str, Any]:
    import inspect

    params = inspect.signature(function).parameters
    return {k: v for k, v in keywords.items() if k in params}


def arrow_type(data_type: Any) -> Any:
    """pyspark's Arrow type for a Spark type (raises for a type Arrow cannot carry); 4.x wants a timezone, 3.5 none."""
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(data_type, **_accepted_keywords(to_arrow_type, {"timezone": "UTC"}))


def arrow_schema(schema: "StructType", timezone: str, large_var_types: bool) -> Any:
    """The Arrow schema of Spark's own Arrow batches for ``schema`` (``toArrowBatchRdd``'s layout).

    pyspark 4.x's ``to_arrow_schema`` takes the session time zone, the duplicate-name check and
    ``prefers_large_types`` (Spark 4's ``toArrowBatchRdd`` honours
    ``spark.sql.execution.arrow.useLargeVarTypes``).  pyspark 3.5's takes the schema only and
    writes timestamps as UTC; Spark 3.5's ``toArrowBatchRdd`` writes the session time zone and
    always small string types (it passes ``largeVarTypes=false``; the conf reaches its pandas
    UDFs only).  So there the time zone is set afterwards, field by field, and ``large_var_types``
    is not applied: the schema matches the batches on both.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    wanted = {"timezone": timezone, "error_on_duplicated_field_names_in_struct": True,
              "prefers_large_types": large_var_types}
    given = _accepted_keywords(to_arrow_schema, wanted)
    arrow = to_arrow_schema(schema, **given)
    if "timezone" in given:
        return arrow
    logger.debug("pyspark's to_arrow_schema takes no time zone: timestamps get %s afterwards", timezone)
    import pyarrow as pa

    def zoned(t: "pa.DataType") -> "pa.DataType":
        if pa.types.is_timestamp(t) and t.tz is not None:
            return pa.timestamp(t.unit, tz=timezone)
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(zoned(f.type)) for f in t])
        if pa.types.is_list(t):
            return pa.list_(t.value_field.with_type(zoned(t.value_type)))
        if pa.types.is_map(t):
            return pa.map_(t.key_field.with_type(zoned(t.key_type)), t.item_field.with_type(zoned(t.item_type)))
        return t

    return pa.schema([f.with_type(zoned(f.type)) for f in arrow], metadata=arrow.metadata)


def columns_pyspark_cannot_read(df: "DataFrame") -> List[Tuple[str, str]]:
    """(name, type) of the columns whose Spark type this pyspark cannot represent (read from the JVM).

    pyspark 3.5 cannot parse some of Spark's types (``interval``): ``df.schema`` itself fails
    there, so the column to name is found in the JVM's schema, field by field.
    """
    from pyspark.sql.types import _parse_datatype_json_string

    bad = []
    for field in df._jdf.schema().fields():
        try:
            _parse_datatype_json_string(field.dataType().json())
        except Exception:
            bad.append((str(field.name()), str(field.dataType().simpleString())))
    return bad


def spark_schema_of_arrow(schema: Any) -> "StructType":
    """pyspark's Spark schema for an Arrow schema, timestamps without a zone as ``TIMESTAMP_NTZ`` where it can."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema, **_accepted_keywords(from_arrow_schema, {"prefer_timestamp_ntz": True}))


# ---------------------------------------------------------------- DataFrames, RDDs and Java code (data/)
def context_key(sc: "SparkContext") -> object:
    """The JVM SparkContext behind ``sc``: changes when a new SparkContext starts (jars must be added again)."""
    return sc._jsc


def compile_java(sc: "SparkContext", source: str) -> Tuple[Dict[str, bytes], JavaObject]:
    """Compile ``source`` with Janino, the compiler Spark ships for its code generation (no JDK needed).

    Returns the class files by class name and the class loader that holds the compiled classes.
    """
    compiler = sc._jvm.org.codehaus.janino.SimpleCompiler()
    compiler.cook(source)
    codes = compiler.getBytecodes()
    return {str(name): bytes(codes.get(name)) for name in codes.keySet()}, compiler.getClassLoader()


def add_jar(sc: "SparkContext", path: str) -> None:
    """Hand a jar to the executors (they fetch it before their next task)."""
    sc._jsc.addJar(path)


def run_java_main(sc: "SparkContext", jar: str, main_class: str, args: Sequence[str]) -> None:
    """``main_class.main(args)`` from ``jar``, in the driver's JVM (its SparkSession is the active one).

    The jar gets a class loader of its own whose parent is the one that loaded Spark, so the
    application's classes see Spark's; the call's exception (the application's) is raised.
    """
    jvm, gateway = sc._jvm, sc._gateway
    urls = gateway.new_array(jvm.java.net.URL, 1)
    urls[0] = jvm.java.io.File(jar).toURI().toURL()
    parent = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    loader = jvm.java.net.URLClassLoader(urls, parent)
    cls = jvm.java.lang.Class.forName(main_class, True, loader)
    string_array = jvm.java.lang.Class.forName("[Ljava.lang.String;")
    types = gateway.new_array(jvm.java.lang.Class, 1)
    types[0] = string_array
    method = cls.getMethod("main", types)
    jargs = gateway.new_array(jvm.java.lang.String, len(args))
    for i, a in enumerate(args):
        jargs[i] = a
    call = gateway.new_array(jvm.java.lang.Object, 1)
    call[0] = jargs
    saved = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    jvm.java.lang.Thread.currentThread().setContextClassLoader(loader)
    try:
        method.invoke(None, call)
    finally:
        jvm.java.lang.Thread.currentThread().setContextClassLoader(saved)


def new_java_instance(sc: "SparkContext", cls: JavaObject, args: Sequence[object]) -> JavaObject:
    """``new cls(args...)`` for a class loaded by :func:`compile_java`'s loader (one public constructor)."""
    array = sc._gateway.new_array(sc._jvm.java.lang.Object, len(args))
    for i, arg in enumerate(args):
        array[i] = arg
    return cls.getConstructors()[0].newInstance(array)


def collect_jvm_partitions(sc: "SparkContext", rdd: JavaObject, function: JavaObject) -> List[str]:
    """``rdd.mapPartitionsWithIndex(function).collect()`` on a JVM RDD, as strings."""
    jvm = sc._jvm
    jrdd = jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, jvm.scala.reflect.ClassTag.Any())
    return [str(line) for line in jrdd.mapPartitionsWithIndex(function, False).collect()]


def num_partitions(df: "DataFrame") -> int:
    """The partitions of ``df``'s RDD (planned, not run)."""
    return int(df._jdf.rdd().getNumPartitions())


def schema_default_size(df: "DataFrame") -> int:
    """Spark's estimate of one row's size in bytes (``StructType.defaultSize``)."""
    return int(df._jdf.schema().defaultSize())


def size_estimate(df: "DataFrame") -> int:
    """Spark's estimate of ``df``'s size in bytes (0 when it has none, as Spark's own planner would assume small)."""
    try:
        size = df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes()  # a scala BigInt
        return size if isinstance(size, int) else int(size.toString())  # (py4j converts Scala 2.12's)
    except Exception as e:
        logger.debug("no size estimate: %s", e)
        return 0


def arrow_batch_rdd(df: "DataFrame") -> JavaObject:
    """Spark's own Arrow encoding of ``df``: a JVM ``RDD[Array[Byte]]``, one IPC record-batch message each."""
    return df._jdf.toArrowBatchRdd()


def python_rdd_of_bytes(sc: "SparkContext", rdd: JavaObject) -> "RDD":
    """A JVM ``RDD[Array[Byte]]`` as a Python RDD of ``bytes`` (no deserialization)."""
    from pyspark.rdd import RDD
    from pyspark.serializers import NoOpSerializer

    jvm = sc._jvm
    jrdd = jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, jvm.scala.reflect.ClassTag.Any())
    return RDD(jrdd, sc, NoOpSerializer())


def wrap_python_functions(rdd: "RDD") -> None:
    """Make pyspark wrap the RDD's Python functions now (it copies ``sc.environment`` into them then)."""
    rdd._jrdd  # noqa: B018 (a property with the side effect)


def columnar_scan(df: "DataFrame", pass_through: Sequence[str]) -> Optional[JavaObject]:
    """The plan node under ``pass_through`` nodes that yields ``df``'s exact columns as ColumnarBatches, or None."""
    try:
        plan = df._jdf.queryExecution().executedPlan()
        while True:
            name = plan.getClass().getSimpleName()
            if name == "AdaptiveSparkPlanExec":  # Spark 3.5 wraps a cached table's scan; its plan as it stands
                plan = plan.executedPlan()
            elif name in pass_through:
                plan = plan.child()
            else:
                break
        if plan.supportsColumnar() and plan.schema().simpleString() == df._jdf.schema().simpleString():
            return plan  # the same columns, names and types, in the same order
    except Exception as e:  # another Spark's plan classes: Spark's row-wise encoding still works
        logger.debug("from_spark: no columnar source: %s", e)
    return None


def execute_columnar(plan: JavaObject) -> JavaObject:
    """The plan node's ``RDD[ColumnarBatch]``."""
    return plan.executeColumnar()


def plan_node_name(plan: JavaObject) -> str:
    return str(plan.nodeName())


# ---------------------------------------------------------------- the driver JVM of Spark on Ray (on_ray/)
def driver_jvm_running() -> bool:
    """Whether this process's pyspark has already launched its JVM (its environment can no longer change)."""
    from pyspark import SparkContext

    return SparkContext._gateway is not None


def launch_driver_jvm(confs: Dict[str, str], local_ip: str) -> None:
    """Launch pyspark's JVM (py4j gateway) now, with ``confs`` that shape the JVM itself (heap, options, jars).

    ``SPARK_LOCAL_IP`` is set for the JVM only (a master started in it binds its web UI there).
    """
    from pyspark import SparkConf, SparkContext

    with SparkContext._lock:
        saved = os.environ.get("SPARK_LOCAL_IP")
        os.environ["SPARK_LOCAL_IP"] = local_ip
        try:
            conf = SparkConf(loadDefaults=False)
            for key, value in confs.items():
                conf.set(key, value)
            SparkContext._ensure_initialized(conf=conf)
        finally:
            if saved is None:
                os.environ.pop("SPARK_LOCAL_IP", None)
            else:
                os.environ["SPARK_LOCAL_IP"] = saved


def driver_jvm_classpath() -> str:
    """The classpath pyspark's launcher gave the driver's JVM."""
    import psutil
    from pyspark import SparkContext

    cmd = psutil.Process(SparkContext._gateway.proc.pid).cmdline()
    return cmd[cmd.index("-cp") + 1]


def executor_startup_java_options(sc: "SparkContext") -> List[str]:
    """JVM options an executor of this application needs: Java's module options and the startup confs.

    The confs an executor needs before it can talk to the driver (auth, rpc, ports), as
    ``-Dkey=value``; Spark itself leaves the secret out (it travels in _SPARK_AUTH_SECRET).
    """
    jvm = sc._jvm
    options = shlex.split(jvm.org.apache.spark.launcher.JavaModuleOptions.defaultModuleOptions())
    for key, value in sorted(sc.getConf().getAll()):
        if jvm.org.apache.spark.SparkConf.isExecutorStartupConf(key) and "secret" not in key:
            options.append(f"-D{key}={value}")
    return options


def start_master_in_driver(host: str, port: int, secret: str) -> JavaObject:
    """A standalone Master in the driver's JVM (as Spark's local-cluster mode does); its RpcEnv.

    It has no workers by design, so its "no worker can run this app" warning is silenced.
    """
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        raise RayOnSparkError("the Spark driver's JVM did not start; see the errors above")
    try:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.spark.deploy.master.Master", jvm.org.apache.logging.log4j.Level.ERROR)
    except Exception as e:
        logger.debug("quieting the in-driver master's log: %s", e)
    conf = jvm.org.apache.spark.SparkConf(False)
    conf.set("spark.authenticate", "true").set("spark.authenticate.secret", secret)
    return jvm.org.apache.spark.deploy.master.Master.startRpcEnvAndEndpoint(host, port, 0, conf)._1()


def stop_rpc_env(rpc_env: JavaObject) -> None:
    rpc_env.shutdown()
    rpc_env.awaitTermination()
