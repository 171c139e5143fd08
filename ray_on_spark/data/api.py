"""from_spark / to_spark: Spark DataFrame <-> Ray Dataset through Ray's object store, never through the driver.

Spark -> Ray (:func:`from_spark`): every Spark task takes its partition in Spark's own Arrow
encoding (``toArrowBatchRdd``).  First path (:mod:`ray_on_spark.data.jvm_writer`): the
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

import logging
import shutil
import uuid
from typing import TYPE_CHECKING, Dict, List, Optional

from ray_on_spark import _ray, spark_env
from ray_on_spark.data import jvm_writer, lifetimes
from ray_on_spark.data.holders import Holder, holder_for_current_cluster
from ray_on_spark.data.python_workers import RayAccess, conversion_workers, fetch_partition, put_partition
from ray_on_spark.data.spark_arrow import arrow_batches
from ray_on_spark.errors import RayNotConnectedError, RayOnSparkError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType
    from ray.data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["from_spark", "to_spark", "release_converted_data"]

#: Target size of one Ray block made by a Spark task (Ray Data's own default is 128 MiB).
BLOCK_BYTES = 64 * 2**20


def _refuse_column(name: str, type_name: str, why: str) -> TypeError:
    return TypeError(
        f"column {name!r} has type {type_name}, which Arrow cannot carry ({why[:200]}); cast or drop it first, "
        f"e.g. df.withColumn({name!r}, df[{name!r}].cast('string'))."
    )


def check_arrow_types(schema: "StructType") -> None:
    """Refuse a column Arrow cannot carry, naming it, before any Spark job runs."""
    for field in schema.fields:
        try:
            spark_env.arrow_type(field.dataType)
        except Exception as e:
            raise _refuse_column(field.name, field.dataType.simpleString(), str(e).splitlines()[0]) from None


def readable_schema(df: "DataFrame") -> "StructType":
    """``df.schema``, or a TypeError naming the column that pyspark cannot represent (3.5: ``interval``)."""
    try:
        return df.schema
    except Exception:
        bad = spark_env.columns_pyspark_cannot_read(df)
        if not bad:
            raise
        name, type_name = bad[0]
        raise _refuse_column(name, type_name, "pyspark cannot represent it") from None


def num_blocks_wanted(parallelism: Optional[int], override_num_blocks: Optional[int]) -> Optional[int]:
    """The block count asked for through Ray's ``override_num_blocks`` or its older name ``parallelism``."""
    for name, value in (("parallelism", parallelism), ("override_num_blocks", override_num_blocks)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}={value!r} must be a whole number of blocks >= 1, e.g. {name}=8, or None "
                             f"(one block per ~{BLOCK_BYTES // 2**20} MiB of each partition)")
    if parallelism is not None and override_num_blocks is not None and parallelism != override_num_blocks:
        raise ValueError(f"parallelism={parallelism} and override_num_blocks={override_num_blocks} disagree: "
                         f"pass override_num_blocks only (parallelism is its deprecated name)")
    return override_num_blocks if override_num_blocks is not None else parallelism


def from_spark(df: "DataFrame", parallelism: Optional[int] = None, *, override_num_blocks: Optional[int] = None,
               block_bytes: int = BLOCK_BYTES) -> "Dataset":
    """Spark DataFrame -> ``ray.data.Dataset``, through the object store (RayDP's ``spark_dataframe_to_ray_dataset``).

    Needs a connected Ray (``ray.init()``) whose nodes run the Spark executors (true in
    both modes).  The Dataset's blocks are owned by the holder's block owners (module doc).
    Spark's estimate of the DataFrame's size must leave half of ``/dev/shm`` free for the
    executors' JVMs to write it there; otherwise it goes through Python workers.

    ``override_num_blocks`` (Ray's ``ray.data.from_spark``) or ``parallelism`` (its older name,
    and RayDP's): that many blocks -- the DataFrame is repartitioned to that many partitions
    when it has another count (as RayDP does), and each partition becomes one block (an
    empty partition none).  Otherwise each partition gives a block per ``block_bytes``.
    """
    wanted = num_blocks_wanted(parallelism, override_num_blocks)
    _require_ray()
    spark_env.require_free_slot(df.sparkSession.sparkContext, "from_spark")
    if wanted is not None:
        if spark_env.num_partitions(df) != wanted:
            df = df.repartition(wanted)
        block_bytes = 2**62  # one block per partition
    check_arrow_types(readable_schema(df))
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone")
    large = (df.sparkSession.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false") or "").lower() == "true"
    schema = spark_env.arrow_schema(df.schema, tz, large)  # as Spark's own batches are
    holder = holder_for_current_cluster()
    if jvm_writer.enabled():
        blocks = _write_and_load(df, schema, holder, block_bytes)
        if blocks is not None:
            logger.debug("from_spark via Arrow files: %d blocks, %d rows", len(blocks), sum(b[1] for b in blocks))
            return _dataset(blocks, schema)
    return _from_spark_via_python(df, schema, holder, block_bytes)


def _write_and_load(df: "DataFrame", schema: "pyarrow.Schema", holder: Holder, block_bytes: int
                    ) -> Optional[List[tuple]]:
    """from_spark's first path (:mod:`ray_on_spark.data.jvm_writer`): (ref, rows, bytes) per block.

    None when the path cannot be used here (an executor's host has no Ray node, /dev/shm
    lacks room, the writer does not compile): the caller then goes through Python workers.
    A failing Spark job is raised; its files are removed either way.
    """
    import ray

    sc = df.sparkSession.sparkContext
    alive = jvm_writer.alive_nodes()
    nodes = jvm_writer.host_nodes(alive, ray.get_runtime_context().get_node_id())
    hosts = spark_env.executor_hosts(sc)  # the driver's too
    host_node = {h: jvm_writer.node_for(h, nodes) for h in hosts}
    if None in host_node.values():
        logger.info("from_spark: a Spark executor's host has no Ray node (%s, Ray: %s); using Python workers",
                    sorted(hosts), sorted(nodes))
        return None
    try:
        jvm_writer.writer_class(sc)
    except Exception as e:
        logger.warning("from_spark: the JVM Arrow writer is not available (%s); using Python workers",
                       str(e).splitlines()[0][:300])
        return None
    owners = {node: ray.get(holder.handle.owner_for.remote(node)) for node in set(host_node.values())}
    directory = jvm_writer.new_directory()
    try:
        # Each node's owner makes the directory and loads the files while the job runs.
        free = dict(zip(owners, ray.get([o.watch.remote(directory, block_bytes) for o in owners.values()])))
        estimate = spark_env.size_estimate(df)
        stores = jvm_writer.object_store_bytes_by_node(alive)
        short = [n for n in owners if not jvm_writer.fits(estimate, jvm_writer.room(free[n], stores.get(n, 0)))]
        if short:
            logger.info("from_spark: /dev/shm lacks room for ~%d MB on %d host(s); using Python workers",
                        estimate >> 20, len(short))
            return None
        with spark_env.job_description(sc, _describe(df, estimate)):
            parts = jvm_writer.write_partitions(df, schema, directory)
        by_node: Dict[str, List[str]] = {}
        for _, host, path in parts:
            node = jvm_writer.node_for(host, nodes)
            if node not in owners:
                raise RayOnSparkError(f"a Spark task reported host {host!r}, which is not a known executor host "
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


def _describe(df: "DataFrame", size_estimate: int) -> str:
    """The Spark UI's description of a from_spark job: what it converts, and how much."""
    size = f"~{size_estimate / 2**20:.0f} MB" if 0 < size_estimate < 2**62 else "size unknown"
    return f"from_spark: {len(df.columns)} column(s), {size}, into Ray's object store"


def _dataset(blocks: List[tuple], schema: "pyarrow.Schema") -> "Dataset":
    """The Dataset of (ref, rows, bytes) blocks; an empty one keeps the schema."""
    import ray

    if not blocks:
        blocks = [(ray.put(schema.empty_table()), 0, 0)]  # tiny; owned by the driver
    return _ray.dataset_of_blocks([b[0] for b in blocks], [(b[1], b[2]) for b in blocks], schema)


def _from_spark_via_python(df: "DataFrame", schema: "pyarrow.Schema", holder: Holder, block_bytes: int) -> "Dataset":
    """from_spark through Python workers: each task puts its blocks and a block owner adopts them."""
    import ray

    access = _access(holder)
    conversion = uuid.uuid4().hex
    rdd = arrow_batches(df).mapPartitionsWithIndex(put_partition(access, conversion, block_bytes, schema))
    with conversion_workers(rdd.context):
        spark_env.wrap_python_functions(rdd)  # now, with the conversion workers' environment
    with spark_env.job_description(rdd.context, _describe(df, spark_env.size_estimate(df))):
        summary = rdd.collect()
    blocks = ray.get(holder.handle.take.remote(conversion))
    # The Dataset now borrows the blocks; the owners keep them (and free them when killed).
    ray.get(holder.handle.release.remote(conversion))
    logger.debug("from_spark: %d partitions, %d blocks, %d rows", len(summary), len(blocks), sum(r[2] for r in summary))
    return _dataset(blocks, schema)


def to_spark(ds: "Dataset", spark: "SparkSession", parallelism: Optional[int] = None) -> "DataFrame":
    """``ray.data.Dataset`` -> Spark DataFrame; executors fetch the blocks from the object store.

    The DataFrame is lazy like any other: each action reads the blocks again. The holder keeps
    them while Spark can still run a plan that reads them -- this DataFrame, or one derived from
    it, cached or registered as a view -- and releases them once the JVM has dropped every such
    plan (:mod:`ray_on_spark.data.lifetimes`); at the latest when the session or cluster stops.
    """
    import ray

    _require_ray()
    spark_env.require_free_slot(spark.sparkContext, "to_spark (each action on its DataFrame)")
    refs = _ray.block_refs(ds)  # the Dataset's own blocks, no copy (to_arrow_refs may convert)
    schema = ds.schema()
    arrow_schema = schema.base_schema if hasattr(schema, "base_schema") else schema
    spark_schema = spark_env.spark_schema_of_arrow(arrow_schema)
    holder = holder_for_current_cluster()
    conversion = uuid.uuid4().hex
    n = len(refs) if parallelism is None else max(1, min(parallelism, len(refs) or 1))
    parts: List[list] = [[] for _ in range(max(n, 1))]
    for i, ref in enumerate(refs):
        parts[i * len(parts) // max(len(refs), 1)].append(ref)
    ray.get([holder.handle.hold.remote(conversion, i, p) for i, p in enumerate(parts)])
    access = _access(holder)
    ids = spark.range(0, len(parts), numPartitions=len(parts)).selectExpr("CAST(id AS INT) AS partition")
    sc = spark.sparkContext
    key, watch = spark_env.watched_broadcast(sc, conversion)  # the plans' hold on the blocks (see lifetimes)
    with conversion_workers(sc):  # mapInArrow wraps the function at once
        df = ids.mapInArrow(fetch_partition(access, key, arrow_schema), spark_schema)
    del key  # only the plans may keep it (and so its JVM object) alive
    handle = holder.handle
    # while_connected: the sweeper may run after Ray shut down, and an actor call would start a new Ray
    release = _ray.while_connected(lambda: handle.release.remote(conversion))
    lifetimes.TRACKER.track(df, watch, release, f"to_spark conversion {conversion}")
    return df


def _access(holder: Holder) -> RayAccess:
    """How the conversion's Spark tasks reach this cluster (as Ray Clients on hosts without a node)."""
    import ray

    gcs = ray.get_runtime_context().gcs_address
    client = _ray.client_address_for(gcs)
    ips: tuple = ()
    if client is not None:
        ips = tuple(sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}))
    return RayAccess(address=gcs, holder_name=holder.name, token=_ray.current_token(), client_address=client,
                     node_ips=ips, client_node_id=ray.get_runtime_context().get_node_id())


def _require_ray() -> None:
    import ray

    if not ray.is_initialized():
        raise RayNotConnectedError(
            "Ray is not connected in this process: call ray.init() first (after setup_ray_cluster or before "
            "init_spark), then convert."
        )


def release_converted_data() -> int:
    """Free the Datasets converted in Spark-on-Ray sessions stopped with ``stop_spark(cleanup_data=False)``.

    Such a session's Datasets stay readable after it stops (RayDP's behaviour) until this is
    called, or until Ray shuts down.  Returns how many stopped sessions' data was freed.
    """
    from ray_on_spark.data.holders import release_kept_scopes

    return release_kept_scopes()
