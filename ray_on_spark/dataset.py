"""Spark DataFrame <-> Ray Dataset through Ray's object store, never through the driver.

Spark -> Ray (:func:`from_spark`): every Spark task takes its partition in Spark's own Arrow
encoding (``toArrowBatchRdd``).  First path (:mod:`ray_on_spark.arrow_files`): the
executor's JVM writes it as an Arrow stream file in ``/dev/shm``, and a long-lived
:class:`BlockOwner` actor on a Ray node of that host maps the file and puts its batches
into the object store as blocks of about ``BLOCK_BYTES`` that it owns -- while the job
still runs.  Fallback path (no ``/dev/shm`` room, an executor host without a Ray node, the
writer unavailable, or ``RAY_ON_SPARK_ARROW_FILES=0``): the task's Python worker connects to
Ray, puts the blocks into its node's object store, and the node's BlockOwner adopts them
(Ray >= 2.56 has no ``ray.put(_owner=...)``).  Either way the driver gets only object
references and each block's size, and builds the Dataset from them: the data never passes
through the driver, and it outlives the Spark tasks that made it.

Ray -> Spark (:func:`to_spark`): the driver gives the Dataset's block references to the
holder; a DataFrame of ``n`` partitions is defined whose task ``i`` asks the holder for
its blocks and streams them to Spark as Arrow batches -- fetched by each executor from the
object store, with no collect to the driver.

The holder is one Ray actor (0 CPUs, on the head node) per Ray-on-Spark cluster or per
Spark-on-Ray session; it and its block owners own the converted data:
``stop_spark(cleanup_data=True)`` or ``shutdown_ray_cluster()`` kills them, which frees
the blocks; with ``stop_spark(cleanup_data=False)`` they stay, and so do the Datasets.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from ray_on_spark import arrow_files, gcs

logger = logging.getLogger(__name__)

NAMESPACE = "ray_on_spark"
#: Target size of one Ray block made by a Spark task (Ray Data's own default is 128 MiB).
BLOCK_BYTES = 64 * 2**20
#: Target size of one Arrow record batch that Spark hands to from_spark's tasks (see batch_rows).
BATCH_BYTES = 4 * 2**20
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 10_000, 1_000_000


class DataHolder:
    """Owns the blocks of converted data and lends their references out (a Ray actor)."""

    def __init__(self):
        self.blocks: Dict[str, Dict[int, list]] = {}
        self.owners: Dict[str, object] = {}  # node id -> BlockOwner actor (the holder's children)

    def hold(self, conversion: str, partition: int, refs: list) -> None:
        # A retried Spark task replaces its earlier attempt's blocks (which are then freed).
        self.blocks.setdefault(conversion, {})[partition] = refs

    def take(self, conversion: str) -> list:
        parts = self.blocks.get(conversion, {})
        return [ref for p in sorted(parts) for ref in parts[p]]

    def part(self, conversion: str, partition: int) -> list:
        return self.blocks.get(conversion, {}).get(partition, [])

    def release(self, conversion: str) -> None:
        self.blocks.pop(conversion, None)

    def ping(self) -> bool:
        return True

    def owner_for(self, node_id: str):
        """The BlockOwner on ``node_id``, started on first use.

        Started by the holder, so it is the holder's child: it dies with the holder, which
        dies with the driver -- nothing is left in a shared Ray cluster after the driver goes.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if node_id not in self.owners:
            self.owners[node_id] = ray.remote(BlockOwner).options(
                num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote()
        return self.owners[node_id]

    def owner_handles(self) -> list:
        return list(self.owners.values())


class BlockOwner:
    """Owns the blocks made on one node (a Ray actor pinned to that node, a child of the holder).

    Ray 2.56 removed ``ray.put(..., _owner=...)``, so an object is owned by the process
    that put it, and neither an executor's JVM nor a Spark task's Python worker lives long
    enough.  This actor puts the blocks itself: from the Arrow files an executor on its
    host wrote (:meth:`watch`, :meth:`collect`), or, on the fallback path, by adopting a
    block a task's Python worker put on this node (it maps it zero-copy and puts it again).

    It keeps no reference of its own.  As the owner it counts everyone who borrows a
    block (the task, the holder, then the driver's Dataset), so a block lives while a
    Dataset refers to it and is freed when the last one is dropped, as any ``ray.put``
    object is; and it is freed at once when this actor dies (``cleanup_data=True``).
    """

    def __init__(self):
        self._watches: Dict[str, "_Watch"] = {}

    def watch(self, directory: str, block_bytes: int) -> int:
        """Make the conversion's private directory on this host and load its files as tasks finish them.

        Returns the bytes free in /dev/shm here. The executors' writer refuses to make the
        directory itself, so a task attempt that runs after the conversion ended (a late
        speculative copy, a zombie of a failed job) cannot leave a file behind.
        """
        if directory not in self._watches:
            os.mkdir(directory, 0o700)
            self._watches[directory] = _Watch(self, directory, block_bytes)
        return shutil.disk_usage(os.path.dirname(directory)).free

    def collect(self, directory: str, paths: List[str], block_bytes: int) -> List[list]:
        """The blocks of each of ``paths`` (the job's successful tasks' files); the watch ends.

        A file the watch has not loaded yet is loaded now; blocks of other files (a failed
        or speculative task attempt's) are dropped, which frees them.
        """
        watch = self._watches.pop(directory, None)
        loaded = watch.stop() if watch is not None else {}  # raises what the watch's loading raised
        return [loaded[path] if path in loaded else self.load(path, block_bytes) for path in paths]

    def load(self, path: str, block_bytes: int) -> list:
        """Put an Arrow stream file that a Spark executor on this host wrote (arrow_files) as our blocks.

        The file is mapped, not read; each block (batches up to ``block_bytes``) is copied
        once, into the object store; the file is deleted. Returns (ref, rows, bytes) per block.
        """
        import pyarrow as pa
        import ray

        blocks, pending, size = [], [], 0

        def flush(schema):
            nonlocal pending, size
            table = pa.Table.from_batches(pending, schema=schema)
            blocks.append((ray.put(table), table.num_rows, table.nbytes))
            pending, size = [], 0

        with pa.memory_map(path) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                pending.append(batch)
                size += batch.nbytes
                if size >= block_bytes:
                    flush(reader.schema)
            if pending:
                flush(reader.schema)
        os.unlink(path)  # (a file that failed to load stays for remove_dir)
        return blocks

    def remove_dir(self, directory: str) -> None:
        """Remove a conversion's file directory on this host (what a failed or retried task left)."""
        watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                watch.stop()
            except Exception as e:  # the conversion has failed already; its error is the one to report
                logger.debug("arrow files of %s: %s", directory, e)
        shutil.rmtree(directory, ignore_errors=True)

    def adopt(self, block) -> list:
        """Put ``block`` (a Spark task's table, passed by reference and mapped zero-copy) as our own."""
        import ray

        return [ray.put(block)]

    def ping(self) -> bool:
        return True


class _Watch:
    """A thread in a BlockOwner that loads a conversion's finished files as they appear.

    A task renames its file to ``*.arrows`` once it is complete, so any such file can be
    loaded. Loading while the job runs takes the copy into the object store off the
    conversion's critical path.
    """

    POLL_S = 0.005
    JOIN_S = 300.0

    def __init__(self, owner: BlockOwner, directory: str, block_bytes: int):
        self.owner, self.directory, self.block_bytes = owner, directory, block_bytes
        self.loaded: Dict[str, list] = {}
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ros-arrow-files", daemon=True)
        self._thread.start()

    def _ready(self) -> List[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:  # no task has started yet
            return []
        paths = (os.path.join(self.directory, n) for n in sorted(names) if n.endswith(".arrows"))
        return [p for p in paths if p not in self.loaded]

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            for path in self._ready():
                if self._stop.is_set():
                    return
                try:
                    self.loaded[path] = self.owner.load(path, self.block_bytes)
                except BaseException as e:  # kept for stop() to raise: the conversion fails with it
                    self.error = e
                    return

    def stop(self) -> Dict[str, list]:
        """End the thread (after the file it is loading) and return what it loaded, by path."""
        self._stop.set()
        self._thread.join(timeout=self.JOIN_S)
        if self._thread.is_alive():
            raise RuntimeError(f"loading the Arrow files of {self.directory} took over {self.JOIN_S:.0f}s")
        if self.error is not None:
            raise self.error
        loaded, self.loaded = self.loaded, {}  # the caller's now: dropping it frees those blocks at once
        return loaded


@dataclass(frozen=True)
class RayAccess:
    """How a Spark task's Python worker reaches the driver's Ray cluster and holder."""

    address: str
    holder_name: str
    token: Optional[str] = None

    def connect(self):
        """Connect this Python worker to Ray once (workers are reused across tasks); the holder.

        (A worker connected to a cluster that is shut down exits with it, so a reused worker
        is always connected to the current cluster; tested in Ray-on-Spark mode.)
        """
        import ray

        if not ray.is_initialized():
            if self.token and os.environ.get(gcs.AUTH_TOKEN_ENV) != self.token:
                os.environ[gcs.AUTH_MODE_ENV] = "token"
                os.environ[gcs.AUTH_TOKEN_ENV] = self.token
                gcs.refresh_auth_config()  # Ray caches the auth settings at first use
            ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        key = self.holder_name
        if key not in _WORKER_HANDLES:  # a GCS lookup: once per worker and holder, not per task
            _WORKER_HANDLES[key] = ray.get_actor(self.holder_name, namespace=NAMESPACE)
        return _WORKER_HANDLES[key]

    def local_owner(self, holder):
        """This node's BlockOwner (the holder starts it on first use), asked once per worker."""
        import ray

        key = (self.holder_name, ray.get_runtime_context().get_node_id())
        if key not in _WORKER_HANDLES:
            _WORKER_HANDLES[key] = ray.get(holder.owner_for.remote(key[1]))
        return _WORKER_HANDLES[key]


#: In a Spark task's Python worker: actor handles by holder name (and node), kept across tasks.
#: Holder names are unique, so a later session's tasks never find an earlier one's handles.
_WORKER_HANDLES: Dict[object, object] = {}


def _auth_token() -> Optional[str]:
    """The driver's Ray token when the cluster uses token authentication."""
    if os.environ.get(gcs.AUTH_TOKEN_ENV):  # a Ray-on-Spark cluster's own token
        return os.environ[gcs.AUTH_TOKEN_ENV]
    try:
        from ray._private.authentication.authentication_token_setup import get_authentication_mode
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader

        if get_authentication_mode() != AuthenticationMode.TOKEN:
            return None
        loader = AuthenticationTokenLoader.instance()
        if loader.has_token(ignore_auth_mode=True):
            return loader.get_raw_token(ignore_auth_mode=True)
    except Exception as e:  # older Ray: no token authentication
        logger.debug("no Ray auth token: %s", e)
    return None


_HOLDERS: Dict[str, "Holder"] = {}  # Ray cluster id -> holder handle (for the plain-Ray case)


def holder_for_current_cluster() -> "Holder":
    """The holder of the active Spark-on-Ray session, else one per Ray cluster, made on demand."""
    import ray

    from ray_on_spark import spark_on_ray

    session = spark_on_ray.active_spark()
    if session is not None:
        if session.holder is None:
            session.holder = new_holder()
        return session.holder
    key = ray.get_runtime_context().get_job_id() + ray.get_runtime_context().gcs_address
    if key not in _HOLDERS:
        _HOLDERS[key] = new_holder()
    return _HOLDERS[key]


def release_holders() -> None:
    """Kill the holders made outside a Spark-on-Ray session (their data is freed)."""
    for holder in _HOLDERS.values():
        holder.kill()
    _HOLDERS.clear()


@dataclass(frozen=True)
class Holder:
    """A holder actor's handle and its name (Spark tasks look it up by name)."""

    handle: object
    name: str

    def kill(self) -> None:
        """Kill the holder and its block owners: the data they own is freed."""
        import ray

        try:
            owners = ray.get(self.handle.owner_handles.remote(), timeout=10)
        except Exception as e:  # already gone with its node
            logger.debug("data holder %s: %s", self.name, e)
            owners = []
        handles = [self.handle] + owners
        for handle in handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as e:
                logger.debug("killing %s: %s", handle, e)
        # ray.kill is asynchronous: return once they are dead, so the data is really gone.
        deadline = time.monotonic() + 15
        for handle in handles:
            while time.monotonic() < deadline:
                try:
                    ray.get(handle.ping.remote(), timeout=1)
                except ray.exceptions.RayActorError:
                    break
                except ray.exceptions.GetTimeoutError:
                    continue
                time.sleep(0.05)


def new_holder() -> Holder:
    """A holder actor on the head node: it must outlive every worker node and Spark task."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]),
                None)
    name = f"ros-data-{uuid.uuid4().hex[:12]}"
    options = dict(num_cpus=0, name=name, namespace=NAMESPACE, max_restarts=0)
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=True)
    return Holder(ray.remote(DataHolder).options(**options).remote(), name)


def check_arrow_types(schema) -> None:
    """Refuse a column Arrow cannot carry, naming it, before any Spark job runs."""
    from pyspark.sql.pandas.types import to_arrow_type

    for field in schema.fields:
        try:
            to_arrow_type(field.dataType, timezone="UTC")
        except Exception as e:
            raise TypeError(
                f"column {field.name!r} has type {field.dataType.simpleString()}, which Arrow cannot carry "
                f"({str(e).splitlines()[0][:200]}); cast or drop it first, e.g. "
                f"df.withColumn({field.name!r}, df[{field.name!r}].cast('string'))."
            ) from None


def _put_partition(access: RayAccess, conversion: str, block_bytes: int, schema):
    """The Spark-side function of from_spark: put this partition's Arrow batches in Ray as blocks.

    Its input is Spark's own Arrow encoding of the partition (``toArrowBatchRdd``: one
    IPC record-batch message per element, the same bytes ``toPandas``/``toArrow`` send
    to the driver), read here without a copy.
    """

    def put(index: int, messages: Iterator[bytes]) -> Iterator:
        import pyarrow as pa
        import ray

        holder = access.connect()
        owner = access.local_owner(holder)
        adoptions, sizes, pending, size, rows = [], [], [], 0, 0

        def flush():
            nonlocal pending, size
            if pending:
                table = pa.Table.from_batches(pending, schema=schema)
                # The adoption runs while this task reads on: the pending call keeps the task's own
                # copy pinned until the owner has put its copy, then it is freed.
                adoptions.append(owner.adopt.remote(ray.put(table)))
                sizes.append((table.num_rows, table.nbytes))  # the metadata Ray Data needs
                pending, size = [], 0

        for message in messages:
            batch = pa.ipc.read_record_batch(pa.py_buffer(message), schema)
            pending.append(batch)
            size += batch.nbytes
            rows += batch.num_rows
            if size >= block_bytes:
                flush()
        flush()
        # The owner's references, not the adoption calls' results: those belong to this Python
        # worker, which Spark may end before the driver reads them.
        refs = [ref for adopted in ray.get(adoptions) for ref in adopted]
        blocks = [(ref, n, nbytes) for ref, (n, nbytes) in zip(refs, sizes)]
        ray.get(holder.hold.remote(conversion, index, blocks))  # acknowledged before the job ends
        yield (index, len(blocks), rows)

    return put


def batch_rows(row_bytes: int) -> int:
    """Rows per Arrow record batch for from_spark: about ``BATCH_BYTES`` worth, within bounds.

    Spark's default (10,000 rows) is tuned for pandas UDFs; for a bulk hand-over into Ray,
    batches of a few MiB cost less per byte in the executor's Arrow writer, the pipe to
    Python and the block's chunk count (measured: 0.54-0.61 s -> 0.49-0.52 s for 80 MB).
    ``row_bytes`` is Spark's estimate (``StructType.defaultSize``).
    """
    return max(MIN_BATCH_ROWS, min(MAX_BATCH_ROWS, BATCH_BYTES // max(1, row_bytes)))


_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
#: Held while a conversion changes pyspark's shared state (a session conf, sc.environment) for a moment.
_PYSPARK_STATE_LOCK = threading.Lock()


def arrow_batch_rdd(df):
    """Spark's own Arrow encoding of ``df`` (a JVM ``RDD[Array[Byte]]``, one IPC record-batch message each).

    ``toArrowBatchRdd`` reads the batch size from the session's conf when it is called, so
    the conf is set only around that call (and left alone when the user set it).
    """
    conf = df.sparkSession.conf
    with _PYSPARK_STATE_LOCK:
        user = conf.get(_BATCH_CONF, None)
        if user is None:
            conf.set(_BATCH_CONF, str(batch_rows(df._jdf.schema().defaultSize())))
        try:
            return df._jdf.toArrowBatchRdd()
        finally:
            if user is None:
                conf.unset(_BATCH_CONF)


def _arrow_batches(df):
    """The DataFrame as a Python RDD of Spark's Arrow record-batch messages (no rows in Python)."""
    from pyspark.rdd import RDD
    from pyspark.serializers import NoOpSerializer

    sc = df.sparkSession.sparkContext
    jvm = sc._jvm
    jrdd = jvm.org.apache.spark.api.java.JavaRDD.fromRDD(arrow_batch_rdd(df), jvm.scala.reflect.ClassTag.Any())
    return RDD(jrdd, sc, NoOpSerializer())


#: Set in the environment of the Python functions of from_spark's and to_spark's tasks.
#: Spark keeps a pool of Python workers per (python, environment), so these tasks get
#: workers of their own, and no other task (a Ray worker node's barrier task, a user's UDF)
#: ever runs in a worker that a conversion connected to Ray. That matters because such a
#: worker exits on its own about a minute after its Ray cluster goes away (Ray's core
#: worker gives up on the lost GCS), which would crash whatever task it runs then.
CONVERSION_WORKER_ENV = "RAY_ON_SPARK_CONVERSION_WORKER"


@contextlib.contextmanager
def _conversion_workers(sc):
    """Python functions wrapped inside run in the conversion tasks' own Python workers.

    pyspark copies ``sc.environment`` into each Python function when it wraps it, so the
    variable is set only while the function is wrapped.
    """
    with _PYSPARK_STATE_LOCK:
        saved = sc.environment.get(CONVERSION_WORKER_ENV)
        sc.environment[CONVERSION_WORKER_ENV] = "1"
        try:
            yield
        finally:
            if saved is None:
                sc.environment.pop(CONVERSION_WORKER_ENV, None)
            else:
                sc.environment[CONVERSION_WORKER_ENV] = saved


def from_spark(df, block_bytes: int = BLOCK_BYTES):
    """Spark DataFrame -> ``ray.data.Dataset``, through the object store (RayDP's ``spark_dataframe_to_ray_dataset``).

    Needs a connected Ray (``ray.init()``) whose nodes run the Spark executors (true in
    both modes).  The Dataset's blocks are owned by the holder's block owners (module doc).
    Spark's estimate of the DataFrame's size must leave half of ``/dev/shm`` free for the
    executors' JVMs to write it there; otherwise it goes through Python workers.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    _require_ray()
    check_arrow_types(df.schema)
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone")
    large = (df.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") or "").lower() == "true"
    schema = to_arrow_schema(df.schema, timezone=tz, error_on_duplicated_field_names_in_struct=True,
                             prefers_large_types=large)  # as Spark's own batches are
    holder = holder_for_current_cluster()
    if arrow_files.enabled():
        blocks = _write_and_load(df, schema, holder, block_bytes)
        if blocks is not None:
            logger.debug("from_spark via Arrow files: %d blocks, %d rows", len(blocks), sum(b[1] for b in blocks))
            return _dataset(blocks, schema)
    return _from_spark_via_python(df, schema, holder, block_bytes)


def _write_and_load(df, schema, holder: "Holder", block_bytes: int) -> Optional[List[tuple]]:
    """from_spark's first path (:mod:`ray_on_spark.arrow_files`): (ref, rows, bytes) per block.

    None when the path cannot be used here (an executor's host has no Ray node, /dev/shm
    lacks room, the writer does not compile): the caller then goes through Python workers.
    A failing Spark job is raised; its files are removed either way.
    """
    import ray

    sc = df.sparkSession.sparkContext
    alive = arrow_files.alive_nodes()
    nodes = arrow_files.host_nodes(alive, ray.get_runtime_context().get_node_id())
    hosts = {e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()}  # the driver's too
    host_node = {h: arrow_files.node_for(h, nodes) for h in hosts}
    if None in host_node.values():
        logger.info("from_spark: a Spark executor's host has no Ray node (%s, Ray: %s); using Python workers",
                    sorted(hosts), sorted(nodes))
        return None
    try:
        arrow_files.writer_class(sc)
    except Exception as e:
        logger.warning("from_spark: the JVM Arrow writer is not available (%s); using Python workers",
                       str(e).splitlines()[0][:300])
        return None
    owners = {node: ray.get(holder.handle.owner_for.remote(node)) for node in set(host_node.values())}
    directory = arrow_files.new_directory()
    try:
        # Each node's owner makes the directory and loads the files while the job runs.
        free = dict(zip(owners, ray.get([o.watch.remote(directory, block_bytes) for o in owners.values()])))
        estimate = arrow_files.size_estimate(df)
        stores = arrow_files.object_store_bytes_by_node(alive)
        short = [n for n in owners if not arrow_files.fits(estimate, arrow_files.room(free[n], stores.get(n, 0)))]
        if short:
            logger.info("from_spark: /dev/shm lacks room for ~%d MB on %d host(s); using Python workers",
                        estimate >> 20, len(short))
            return None
        parts = arrow_files.write_partitions(df, schema, directory)
        by_node: Dict[str, List[str]] = {}
        for _, host, path in parts:
            node = arrow_files.node_for(host, nodes)
            if node not in owners:
                raise RuntimeError(f"a Spark task reported host {host!r}, which is not a known executor host "
                                   f"({sorted(hosts)}); set RAY_ON_SPARK_ARROW_FILES=0 to convert through Python workers")
            by_node.setdefault(node, []).append(path)
        nodes_paths = list(by_node.items())
        collected = ray.get([owners[node].collect.remote(directory, paths, block_bytes) for node, paths in nodes_paths])
        blocks_of = {path: blocks for (_, paths), per_path in zip(nodes_paths, collected)
                     for path, blocks in zip(paths, per_path)}
        return [block for _, _, path in parts for block in blocks_of[path]]  # in partition order
    finally:  # failed or retried attempts' files, and the directories, on every executor host
        try:
            ray.get([o.remove_dir.remote(directory) for o in owners.values()], timeout=60)
        except Exception as e:  # an owner died with its node (its files went with it) or hangs
            logger.warning("from_spark: removing %s: %s", directory, e)
            shutil.rmtree(directory, ignore_errors=True)  # at least on the driver's host


def _dataset(blocks: List[tuple], schema):
    """The Dataset of (ref, rows, bytes) blocks; an empty one keeps the schema."""
    import ray

    if not blocks:
        blocks = [(ray.put(schema.empty_table()), 0, 0)]  # tiny; owned by the driver
    return dataset_of_blocks([b[0] for b in blocks], [(b[1], b[2]) for b in blocks], schema)


def _from_spark_via_python(df, schema, holder: "Holder", block_bytes: int):
    """from_spark through Python workers: each task puts its blocks and a block owner adopts them."""
    import ray

    access = RayAccess(address=ray.get_runtime_context().gcs_address, holder_name=holder.name, token=_auth_token())
    conversion = uuid.uuid4().hex
    rdd = _arrow_batches(df).mapPartitionsWithIndex(_put_partition(access, conversion, block_bytes, schema))
    with _conversion_workers(rdd.context):
        rdd._jrdd  # wraps the Python function now, with the conversion workers' environment
    summary = rdd.collect()
    blocks = ray.get(holder.handle.take.remote(conversion))
    # The Dataset now borrows the blocks; the owners keep them (and free them when killed).
    ray.get(holder.handle.release.remote(conversion))
    logger.debug("from_spark: %d partitions, %d blocks, %d rows", len(summary), len(blocks), sum(r[2] for r in summary))
    return _dataset(blocks, schema)


def dataset_of_blocks(refs: list, sizes: List[tuple], schema):
    """A materialized Dataset of Arrow blocks of ``schema`` whose (rows, bytes) are known.

    Built as ``ray.data.from_arrow_refs`` builds it, except that it does not run one Ray
    task per block to learn what the Spark tasks already reported: each such task needs a
    free CPU slot and maps its block: ~15 ms for 4 blocks here, and a wait for ever when the
    executors hold every CPU of Ray (RayDP's usual set-up). With a Ray
    whose internals differ, ``from_arrow_refs`` is used.
    """
    import ray

    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.logical.operators.from_operators import FromArrow
        from ray.data._internal.stats import DatasetStats
        from ray.data.block import BlockMetadataWithSchema
        from ray.data.context import DataContext
        from ray.data.dataset import MaterializedDataset

        metadata = [BlockMetadataWithSchema(num_rows=rows, size_bytes=int(nbytes), exec_stats=None, input_files=None,
                                            schema=schema) for rows, nbytes in sizes]
        stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
        context = DataContext.get_current().copy()
        return MaterializedDataset(LogicalPlan(FromArrow(refs, metadata), context), context, stats)
    except Exception as e:  # ImportError, TypeError, AttributeError: another Ray
        logger.debug("from_spark: Ray Data internals differ (%s); using from_arrow_refs", e)
        return ray.data.from_arrow_refs(refs)


def _fetch_partition(access: RayAccess, conversion: str, schema):
    """The Spark-side function of to_spark: stream this partition's blocks from Ray."""

    def fetch(batches: Iterator) -> Iterator:
        import pyarrow as pa
        import ray

        holder = access.connect()
        for batch in batches:
            for partition in batch.column(0).to_pylist():
                for ref in ray.get(holder.part.remote(conversion, partition)):
                    block = ray.get(ref)
                    if not isinstance(block, pa.Table):  # a pandas block
                        block = pa.Table.from_pandas(block, schema=schema, preserve_index=False)
                    yield from block.to_batches()

    return fetch


def to_spark(ds, spark, parallelism: Optional[int] = None):
    """``ray.data.Dataset`` -> Spark DataFrame; executors fetch the blocks from the object store.

    The DataFrame is lazy like any other: each action reads the blocks again, which the
    holder keeps for the life of the session (or cluster).
    """
    import ray
    from pyspark.sql.pandas.types import from_arrow_schema

    _require_ray()
    refs = block_refs(ds)  # the Dataset's own blocks, no copy (to_arrow_refs may convert)
    schema = ds.schema()
    arrow_schema = schema.base_schema if hasattr(schema, "base_schema") else schema
    spark_schema = from_arrow_schema(arrow_schema, prefer_timestamp_ntz=True)
    holder = holder_for_current_cluster()
    conversion = uuid.uuid4().hex
    n = len(refs) if parallelism is None else max(1, min(parallelism, len(refs) or 1))
    parts: List[list] = [[] for _ in range(max(n, 1))]
    for i, ref in enumerate(refs):
        parts[i * len(parts) // max(len(refs), 1)].append(ref)
    ray.get([holder.handle.hold.remote(conversion, i, p) for i, p in enumerate(parts)])
    access = RayAccess(address=ray.get_runtime_context().gcs_address, holder_name=holder.name, token=_auth_token())
    ids = spark.range(0, len(parts), numPartitions=len(parts)).selectExpr("CAST(id AS INT) AS partition")
    with _conversion_workers(spark.sparkContext):  # mapInArrow wraps the function at once
        return ids.mapInArrow(_fetch_partition(access, conversion, arrow_schema), spark_schema)


def block_refs(ds) -> list:
    """References to a Dataset's blocks (executing it if it is lazy), without copying them."""
    return [ref for bundle in ds.iter_internal_ref_bundles() for ref in bundle.block_refs]


def _require_ray() -> None:
    import ray

    if not ray.is_initialized():
        raise RuntimeError(
            "Ray is not connected in this process: call ray.init() first (after setup_ray_cluster or before "
            "init_spark), then convert."
        )
