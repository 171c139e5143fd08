"""Spark DataFrame <-> Ray Dataset through Ray's object store, never through the driver.

Spark -> Ray (:func:`from_spark`): each Spark task (``mapInArrow``) connects its Python
worker to Ray and puts its partition's Arrow record batches into the object store of its
own node as blocks of about ``BLOCK_BYTES``; a long-lived :class:`BlockOwner` actor on the
same node adopts each block (Ray >= 2.56 has no ``ray.put(_owner=...)``), and the task
hands the references to the *holder*.  The driver then takes the references from the
holder and builds a ``ray.data`` Dataset from them: the data never passes through the
driver, and it outlives the Spark tasks that made it.

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
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from ray_on_spark import gcs

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
    that put it -- and a Spark task's Python worker does not live long enough.  The task
    puts its block into its node's object store, and this actor, on the same node, adopts
    it: it maps the block (zero-copy) and puts it again as its own, a local memory copy.

    It keeps no reference of its own.  As the owner it counts everyone who borrows a
    block (the task, the holder, then the driver's Dataset), so a block lives while a
    Dataset refers to it and is freed when the last one is dropped, as any ``ray.put``
    object is; and it is freed at once when this actor dies (``cleanup_data=True``).
    """

    def adopt(self, refs: list) -> list:
        import ray

        return [ray.put(t) for t in ray.get(refs)]

    def ping(self) -> bool:
        return True


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
        refs, pending, size, rows = [], [], 0, 0

        def flush():
            nonlocal pending, size
            if pending:
                mine = ray.put(pa.Table.from_batches(pending, schema=schema))
                refs.extend(ray.get(owner.adopt.remote([mine])))
                del mine  # the task's own copy is freed; the owner's stays
                pending, size = [], 0

        for message in messages:
            batch = pa.ipc.read_record_batch(pa.py_buffer(message), schema)
            pending.append(batch)
            size += batch.nbytes
            rows += batch.num_rows
            if size >= block_bytes:
                flush()
        flush()
        ray.get(holder.hold.remote(conversion, index, refs))
        yield (index, len(refs), rows)

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


def _arrow_batches(df):
    """The DataFrame as a Python RDD of Spark's Arrow record-batch messages (no rows in Python).

    ``toArrowBatchRdd`` reads the batch size from the session's conf when it is called, so
    the conf is set only around that call (and left alone when the user set it).
    """
    from pyspark.rdd import RDD
    from pyspark.serializers import NoOpSerializer

    sc = df.sparkSession.sparkContext
    jvm = sc._jvm
    conf = df.sparkSession.conf
    with _PYSPARK_STATE_LOCK:
        user = conf.get(_BATCH_CONF, None)
        if user is None:
            conf.set(_BATCH_CONF, str(batch_rows(df._jdf.schema().defaultSize())))
        try:
            rdd = df._jdf.toArrowBatchRdd()
        finally:
            if user is None:
                conf.unset(_BATCH_CONF)
    jrdd = jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, jvm.scala.reflect.ClassTag.Any())
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
    """
    import ray
    from pyspark.sql.pandas.types import to_arrow_schema

    _require_ray()
    check_arrow_types(df.schema)
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone")
    schema = to_arrow_schema(df.schema, timezone=tz, error_on_duplicated_field_names_in_struct=True)
    holder = holder_for_current_cluster()
    access = RayAccess(address=ray.get_runtime_context().gcs_address, holder_name=holder.name, token=_auth_token())
    conversion = uuid.uuid4().hex
    rdd = _arrow_batches(df).mapPartitionsWithIndex(_put_partition(access, conversion, block_bytes, schema))
    with _conversion_workers(rdd.context):
        rdd._jrdd  # wraps the Python function now, with the conversion workers' environment
    summary = rdd.collect()
    refs = ray.get(holder.handle.take.remote(conversion))
    # The Dataset now borrows the blocks; the owners keep them (and free them when killed).
    ray.get(holder.handle.release.remote(conversion))
    logger.debug("from_spark: %d partitions, %d blocks, %d rows", len(summary), len(refs), sum(r[2] for r in summary))
    if not refs:  # an empty DataFrame: one empty block keeps the schema
        refs = [ray.put(schema.empty_table())]  # tiny; owned by the driver
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
