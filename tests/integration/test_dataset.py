"""Spark DataFrame <-> Ray Dataset through Ray's object store, on real Spark and Ray.

Spark on Ray (``init_spark``) here; the Ray-on-Spark mode is exercised in
``test_ray_on_spark_standalone.py``.
"""

from __future__ import annotations

import datetime
import decimal
import gc
import logging
import os
import re
import time

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

import ray_on_spark  # noqa: E402
from helpers import to_arrow  # noqa: E402
from ray_on_spark._ray import block_refs  # noqa: E402

RAYS_FROM_SPARK, RAYS_TO_SPARK = ray.data.from_spark, ray.data.Dataset.to_spark  # as Ray ships them


@pytest.fixture(scope="module")
def spark():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=3, object_store_memory=400 * 2**20, include_dashboard=False, log_to_driver=False)
    session = ray_on_spark.init_spark("ros-dataset-tests", 2, 1, "1GB", configs={"spark.sql.session.timeZone": "UTC"})
    yield session
    ray_on_spark.stop_spark()
    ray.shutdown()


ALL_TYPES = [
    "CAST(id AS TINYINT) AS i8", "CAST(id AS SMALLINT) AS i16", "CAST(id AS INT) AS i32", "id AS i64",
    "CAST(id AS FLOAT) / 4 AS f32", "CAST(id AS DOUBLE) / 3 AS f64",
    "CAST(id AS DECIMAL(38, 10)) / 7 AS dec", "CAST(id AS DECIMAL(5, 2)) AS dec_small",
    "CONCAT('é-', CAST(id AS STRING)) AS s", "CAST(CONCAT('b', CAST(id AS STRING)) AS BINARY) AS bin",
    "id % 2 = 0 AS flag", "DATE_ADD(DATE'1969-12-30', CAST(id AS INT)) AS d",
    "TIMESTAMP_SECONDS(id * 86399) AS ts", "CAST(TIMESTAMP_SECONDS(id * 3600) AS TIMESTAMP_NTZ) AS ts_ntz",
    "ARRAY(CAST(id AS INT), NULL, 3) AS arr", "MAP('k', CAST(id AS INT), 'n', NULL) AS m",
    "NAMED_STRUCT('a', CAST(id AS INT), 'b', CONCAT('x', CAST(id AS STRING)), 'c', ARRAY(1.5D)) AS st",
]


def _all_types(spark, rows=50, partitions=3):
    df = spark.range(0, rows, numPartitions=partitions).selectExpr(*ALL_TYPES)
    cols = df.columns
    # every column is NULL in one row
    nulls = spark.range(rows, rows + 1).selectExpr(*[f"CAST(NULL AS {t.simpleString()}) AS {c}"
                                                     for c, t in zip(cols, [f.dataType for f in df.schema.fields])])
    return df.unionByName(nulls)


def _freed(refs, timeout: float = 20.0) -> bool:
    """Probe until reading the blocks fails because their owner died (freeing is asynchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(refs, timeout=5)
        except ray.exceptions.OwnerDiedError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("path", ["arrow-files", "python-workers"])
def test_every_type_arrow_carries_round_trips_exactly(spark, path, monkeypatch, caplog):
    if path == "python-workers":
        monkeypatch.setenv("RAY_ON_SPARK_ARROW_FILES", "0")
    df = _all_types(spark)
    with caplog.at_level(logging.DEBUG, logger="ray_on_spark.data"):
        ds = ray_on_spark.from_spark(df)
    assert ("via Arrow files" in caplog.text) == (path == "arrow-files")
    assert ds.count() == 51
    back = ray_on_spark.to_spark(ds, spark)
    assert [(f.name, f.dataType) for f in back.schema.fields] == [(f.name, f.dataType) for f in df.schema.fields]
    def by_i64(r):
        return (r.i64 is None, r.i64)

    assert sorted(back.collect(), key=by_i64) == sorted(df.collect(), key=by_i64)
    # and the Ray side sees real values, with time zones kept
    row = ds.filter(lambda r: r["i64"] == 3).take(1)[0]
    assert row["dec"] == decimal.Decimal(3) / 7 or abs(row["dec"] - decimal.Decimal("0.4285714286")) < decimal.Decimal("1e-10")
    assert row["d"] == datetime.date(1970, 1, 2)
    assert row["ts"].replace(tzinfo=None) == datetime.datetime(1970, 1, 3, 23, 59, 57)
    schema = ds.schema().base_schema
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")  # the time zone travels in the type
    assert schema.field("ts_ntz").type == pa.timestamp("us")
    assert schema.field("dec").type == pa.decimal128(38, 10)
    assert str(schema.field("m").type) == "map<string, int32>"
    assert row["s"] == "é-3" and row["bin"] == b"b3" and row["st"]["b"] == "x3"


FLAT_TYPES = [e for e in ALL_TYPES if not e.startswith(("ARRAY(", "MAP(", "NAMED_STRUCT("))] + [
    "CAST(id AS FLOAT) AS real32"]  # (f32 is a double: FLOAT / 4)
NUMERIC_TYPES = [e for e in FLAT_TYPES
                 if e.rsplit(" AS ", 1)[1] in ("i8", "i16", "i32", "i64", "f32", "f64", "flag", "real32")]


def _with_nulls(spark, exprs, rows, partitions):
    """A key column ``k`` and ``exprs``, the i-th NULL in every (i+3)-th row (nulls at every bit offset)."""
    cols = [f"IF(k % {i + 3} = 1, NULL, {e.rsplit(' AS ', 1)[0]}) AS {e.rsplit(' AS ', 1)[1]}"
            for i, e in enumerate(exprs)]
    keys = spark.range(0, rows, numPartitions=partitions).selectExpr("id AS k", "id % 120 AS id")  # fits a TINYINT
    return keys.selectExpr("k", *cols)


@pytest.mark.parametrize("source, batch", [
    pytest.param("cached", "2500", id="cached"),
    pytest.param("parquet", "2500", id="parquet"),
    pytest.param("parquet", "700", id="parquet-spark-batches-above-the-batch-size"),
    pytest.param("parquet", "0", id="parquet-no-batch-limit"),
    pytest.param("partitioned", "2500", id="parquet-partition-column-with-nulls"),
])
def test_columnar_sources_are_copied_column_by_column_exactly(spark, source, batch, tmp_path, caplog):
    conf = spark.conf
    # Spark's batches of 1003 / 1001 rows end mid-byte of the validity bitmaps; Arrow batches of
    # 2,500 rows gather several of them, of 700 rows take each alone, of no limit all of a task's.
    if source == "cached":
        conf.set("spark.sql.inMemoryColumnarStorage.batchSize", "1003")
        try:
            df = _with_nulls(spark, NUMERIC_TYPES, 12_000, 3).cache()
            df.count()
        finally:
            conf.unset("spark.sql.inMemoryColumnarStorage.batchSize")
    elif source == "parquet":
        _with_nulls(spark, FLAT_TYPES, 12_000, 3).write.parquet(str(tmp_path / "t"))
        df = spark.read.parquet(str(tmp_path / "t"))
    else:  # Spark's constant vectors for the partition column, one all null
        part = _with_nulls(spark, FLAT_TYPES, 12_000, 3).selectExpr("*", "IF(k % 3 = 0, NULL, CAST(k % 3 AS INT)) AS p")
        part.write.partitionBy("p").parquet(str(tmp_path / "t"))
        df = spark.read.parquet(str(tmp_path / "t"))
    conf.set("spark.sql.parquet.columnarReaderBatchSize", "1001")
    conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", batch)
    try:
        with caplog.at_level(logging.DEBUG, logger="ray_on_spark"):
            ds = ray_on_spark.from_spark(df)
        assert "columnar source" in caplog.text and "via Arrow files" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="ray_on_spark"):
            filtered = ray_on_spark.from_spark(df.where("k % 2 = 0"))
        assert "columnar source" not in caplog.text  # a filter on top: Spark's row-wise encoding
        expected, expected_filtered = to_arrow(df), to_arrow(df.where("k % 2 = 0"))
    finally:
        conf.unset("spark.sql.parquet.columnarReaderBatchSize")
        conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
        df.unpersist()
    blocks = ray.get(block_refs(ds))
    longest = max(len(c) for b in blocks for c in b.column("k").chunks)
    assert {"2500": 1003 < longest <= 2500, "700": longest == 1001, "0": longest > 2500}[batch]
    for got, want in ((pa.concat_tables(blocks), expected),
                      (pa.concat_tables(ray.get(block_refs(filtered))), expected_filtered)):
        assert got.schema.equals(want.schema, check_metadata=False)
        assert got.num_rows == want.num_rows and sum(c.null_count for c in want.columns) > 0
        assert got.sort_by("k").equals(want.sort_by("k"))


@pytest.mark.parametrize("path", ["arrow-files", "python-workers"])
def test_session_time_zone_and_large_var_types_match_sparks_own_batches(spark, path, monkeypatch):
    """Blocks carry the session's time zone and, where Spark's encoding honours it, large string types.

    pyspark 3.5's ``to_arrow_schema`` knows neither, and Spark 3.5's ``toArrowBatchRdd`` writes
    small strings whatever the conf says: the schema must match the batches on both lines.
    """
    from pyspark.sql.pandas.types import to_arrow_schema

    if path == "python-workers":
        monkeypatch.setenv("RAY_ON_SPARK_ARROW_FILES", "0")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    spark.conf.set("spark.sql.execution.arrow.useLargeVarTypes", "true")
    try:
        df = spark.range(0, 100, numPartitions=2).selectExpr(
            "CAST(id AS STRING) AS s", "TIMESTAMP_SECONDS(id * 3600) AS ts", "ARRAY(CAST(id AS STRING)) AS a",
            "NAMED_STRUCT('t', TIMESTAMP_SECONDS(id)) AS st")
        ds = ray_on_spark.from_spark(df)
        table = pa.concat_tables(ray.get(block_refs(ds)))
        want = to_arrow(df)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        spark.conf.unset("spark.sql.execution.arrow.useLargeVarTypes")
    large = "prefers_large_types" in to_arrow_schema.__code__.co_varnames  # Spark 4's encoding honours the conf
    assert table.schema.field("s").type == (pa.large_string() if large else pa.string())
    assert table.schema.field("ts").type == pa.timestamp("us", tz="America/New_York")
    assert table.schema.field("st").type.field("t").type == pa.timestamp("us", tz="America/New_York")
    # the same instants as pyspark's own collect (whose zone label may differ: pyspark 4's toArrow says UTC)
    assert table.cast(want.schema).sort_by("ts").equals(want.sort_by("ts"))


def test_ray_s_own_from_spark_and_to_spark_run_through_ours_without_raydp(spark):
    """RayDP's README: ``ray.data.from_spark(df)`` and ``ds.to_spark(spark)`` -- Ray's functions, which import raydp."""
    import importlib.util

    assert importlib.util.find_spec("raydp") is None  # the test venv has no RayDP: Ray's would raise
    df = spark.range(0, 10_000, numPartitions=3).selectExpr("id AS a", "CAST(id % 7 AS STRING) AS s")
    ds = ray.data.from_spark(df, override_num_blocks=4)
    assert len(block_refs(ds)) == 4 and ds.count() == 10_000 and ds.sum("a") == 9_999 * 10_000 // 2
    assert len(block_refs(ray.data.from_spark(df, parallelism=5))) == 5  # the older name
    assert len(block_refs(ray.data.from_spark(df))) == 3  # one block per partition of this size
    back = ds.to_spark(spark)
    assert back.count() == 10_000 and back.where("s = '3'").count() == df.where("s = '3'").count()


def test_a_type_arrow_cannot_carry_is_refused_naming_the_column(spark):
    df = spark.range(3).selectExpr("id", "make_interval(0, 0, 0, CAST(id AS INT)) AS iv")
    with pytest.raises(TypeError, match=r"column 'iv' has type interval.*cast or drop it first"):
        ray_on_spark.from_spark(df)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: s.range(0), id="empty"),
        pytest.param(lambda s: s.range(1), id="one-row"),
        pytest.param(lambda s: s.range(5000, numPartitions=1).union(s.range(0, 3, numPartitions=5)), id="skewed"),
        pytest.param(lambda s: s.range(20000, numPartitions=13), id="more-partitions-than-executors"),
    ],
)
def test_shapes_round_trip(spark, make):
    df = make(spark).selectExpr("id AS a")
    rows, total = df.count(), df.selectExpr("coalesce(sum(a), 0)").first()[0]
    ds = ray_on_spark.from_spark(df)
    assert ds.count() == rows
    assert (ds.sum("a") or 0) == total if rows else ds.count() == 0
    back = ray_on_spark.to_spark(ds, spark)
    assert back.count() == rows
    assert back.selectExpr("coalesce(sum(a), 0)").first()[0] == total
    assert back.schema == df.schema


def test_dataset_stays_readable_after_its_spark_job_and_other_jobs(spark):
    ds = ray_on_spark.from_spark(spark.range(100000, numPartitions=4).selectExpr("id AS a"))
    spark.range(10**6).selectExpr("id % 10 AS k").groupBy("k").count().collect()  # other Spark work
    assert ds.sum("a") == 100000 * 99999 // 2
    ds2 = ray.data.range(1000).map_batches(lambda b: {"a": b["id"] * 2})
    assert ray_on_spark.to_spark(ds2, spark).selectExpr("sum(a)").first()[0] == 2 * 999 * 1000 // 2


def test_from_spark_needs_no_free_cpu_in_ray(spark):
    """Executors that hold every CPU of Ray (RayDP's usual set-up) must not starve a conversion.

    ``ray.data.from_arrow_refs`` runs a 1-CPU metadata task per block, which would wait
    for a free CPU for ever; from_spark builds the Dataset from what its Spark tasks report.
    """
    import threading

    from ray.util.placement_group import placement_group, remove_placement_group

    free = int(ray.available_resources().get("CPU", 0))
    pg = placement_group([{"CPU": 1}] * free) if free else None
    result: dict = {}
    try:
        if pg is not None:
            assert pg.wait(30), "could not take Ray's free CPUs"
        assert ray.available_resources().get("CPU", 0) == 0

        def convert():
            ds = ray_on_spark.from_spark(spark.range(0, 300_000, numPartitions=3).selectExpr("id AS a", "id % 7 AS b"))
            result.update(count=ds.count(), size=ds.size_bytes(), names=ds.schema().names,
                          rows=sum(t.num_rows for t in ray.get(block_refs(ds))))

        worker = threading.Thread(target=convert, daemon=True)
        worker.start()
        worker.join(90)
        assert not worker.is_alive(), "from_spark waited for a free CPU in Ray"
    finally:
        if pg is not None:
            remove_placement_group(pg)  # also lets a stuck conversion finish
    assert result == {"count": 300_000, "size": 300_000 * 16, "names": ["a", "b"], "rows": 300_000}


def _conversion_dirs() -> set:
    return {d for d in os.listdir("/dev/shm") if d.startswith("ros-conv-")}


def test_a_failing_job_raises_and_leaves_no_file_in_shared_memory(spark):
    before = _conversion_dirs()
    df = spark.range(0, 100_000, numPartitions=4).selectExpr("id AS a", "IF(id = 99999, raise_error('boom'), id) AS b")
    with pytest.raises(Exception, match="boom"):
        ray_on_spark.from_spark(df)
    assert _conversion_dirs() == before
    ds = ray_on_spark.from_spark(spark.range(0, 100_000, numPartitions=4).selectExpr("id AS a"))
    assert ds.sum("a") == 99999 * 100000 // 2
    assert _conversion_dirs() == before  # each file is deleted once its blocks are in the object store


def test_batch_rows_aims_at_a_few_mib_within_bounds():
    from ray_on_spark.data.spark_arrow import BATCH_BYTES, MAX_BATCH_ROWS, MIN_BATCH_ROWS, batch_rows

    assert batch_rows(8) == BATCH_BYTES // 8  # one bigint column: 512Ki rows
    assert batch_rows(1) == MAX_BATCH_ROWS
    assert batch_rows(10_000) == MIN_BATCH_ROWS  # wide rows: Spark's own default
    assert batch_rows(0) == MAX_BATCH_ROWS


def test_from_spark_batches_rows_unless_the_user_set_a_batch_size(spark):
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    df = spark.range(0, 100_000, numPartitions=1).selectExpr("id AS a")
    (block,) = ray.get(block_refs(ray_on_spark.from_spark(df)))
    assert block.column("a").num_chunks == 1  # Spark's default would make 10 batches of 10,000
    assert spark.conf.get(key, None) is None  # set only around the call
    spark.conf.set(key, "30000")
    try:
        (block,) = ray.get(block_refs(ray_on_spark.from_spark(df)))
        assert block.column("a").num_chunks == 4  # the user's setting wins
        assert spark.conf.get(key) == "30000"
    finally:
        spark.conf.unset(key)


def test_no_other_task_runs_in_a_python_worker_a_conversion_connected_to_ray(spark):
    """Such a worker dies about a minute after its Ray cluster does: it must run conversions only."""
    ds = ray_on_spark.from_spark(spark.range(0, 40_000, numPartitions=8).selectExpr("id AS a"))
    assert ray_on_spark.to_spark(ds, spark).count() == 40_000

    def connected(_):
        import sys

        ray_module = sys.modules.get("ray")
        yield bool(ray_module is not None and ray_module.is_initialized())

    for _ in range(3):  # many tasks, so that every idle worker of each executor is taken
        assert not any(spark.sparkContext.parallelize(range(16), 16).mapPartitions(connected).collect())
        assert not any(spark.range(0, 16, numPartitions=16).rdd.mapPartitions(connected).collect())


def _plasma_used_mib() -> int:
    """Bytes in this Ray's object stores, as `ray memory --stats-only` reports them (MiB)."""
    from ray._private.internal_api import memory_summary

    m = re.search(r"Plasma memory usage (\d+) MiB", memory_summary(stats_only=True))
    assert m, "Ray's memory summary no longer reports plasma usage"
    return int(m.group(1))


def test_a_dataset_the_driver_drops_is_freed_while_the_session_runs(spark):
    """The block owners keep no reference of their own: repeated conversions do not pile up."""
    gc.collect()  # earlier tests' Datasets in reference cycles are freed now, not in the loop below
    before, deadline = _plasma_used_mib(), time.monotonic() + 20
    while time.monotonic() < deadline:  # freeing is asynchronous: wait until the usage settles
        time.sleep(0.5)
        now = _plasma_used_mib()
        if now == before:
            break
        before = now
    for _ in range(3):
        ds = ray_on_spark.from_spark(spark.range(2_000_000, numPartitions=2).selectExpr("id AS a"))  # 16 MB
        assert ds.count() == 2_000_000
        assert _plasma_used_mib() >= 15  # the Dataset's blocks are in the store (the probe sees them)
        del ds
        gc.collect()
        deadline = time.monotonic() + 20  # freeing is asynchronous: probe
        while _plasma_used_mib() > before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _plasma_used_mib() <= before


def _settled_plasma_mib(timeout: float = 20.0) -> int:
    """The object store's use once freeing (asynchronous) has settled."""
    gc.collect()
    before, deadline = _plasma_used_mib(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _plasma_used_mib()
        if now == before:
            break
        before = now
    return before


def test_to_spark_blocks_live_while_spark_can_read_them_and_are_freed_after(spark):
    """A DataFrame from to_spark is lazy, so its blocks must outlive the Dataset and the DataFrame
    itself while a derived DataFrame can still run; once Spark's JVM has no plan left that reads
    them they are freed -- before, the holder kept every to_spark's blocks until the session
    stopped (the soak benchmark's object store grew by each minute's round trip)."""
    from ray_on_spark.data import lifetimes

    before = _settled_plasma_mib()
    ds = ray_on_spark.from_spark(spark.range(2_000_000, numPartitions=2).selectExpr("id AS a"))  # 16 MB
    df = ray_on_spark.to_spark(ds, spark)
    derived = df.filter("a % 2 = 0")
    del ds, df
    gc.collect()
    lifetimes.TRACKER.sweep()  # the Python DataFrame is gone: the JVM collects, but a plan still reads them
    assert derived.count() == 1_000_000
    assert _plasma_used_mib() >= before + 15
    del derived
    gc.collect()
    deadline = time.monotonic() + 60
    while _plasma_used_mib() > before and time.monotonic() < deadline:
        lifetimes.TRACKER.sweep(collect=True)  # as its periodic sweep does (Python cannot see `derived` go)
        time.sleep(0.5)
    assert _plasma_used_mib() <= before, "to_spark's blocks were kept after Spark dropped every plan reading them"


def test_stop_spark_keeps_data_without_cleanup_and_frees_it_with_cleanup(spark):
    """Last: ends the module's session (cleanup_data=False), then a second one (cleanup_data=True)."""
    # 200k rows: blocks big enough for the object store (tiny objects travel inline, by value)
    kept = ray_on_spark.from_spark(spark.range(200000, numPartitions=2).selectExpr("id AS a"))
    ray_on_spark.stop_spark(cleanup_data=False)
    assert kept.sum("a") == 199999 * 200000 // 2  # RayDP's behaviour: readable after Spark is gone
    assert ray_on_spark.release_converted_data() == 1
    assert _freed(block_refs(kept))  # its owners are gone: the blocks are freed
    assert ray_on_spark.release_converted_data() == 0

    # RayDP's positional arguments: enable_hive, fault_tolerant_mode
    spark2 = ray_on_spark.init_spark("ros-dataset-tests-2", 1, 1, "600MB", False, True)
    freed = ray_on_spark.from_spark(spark2.range(200000).selectExpr("id AS a"))
    refs = block_refs(freed)
    assert sum(t.num_rows for t in ray.get(refs)) == 200000
    ray_on_spark.stop_spark(cleanup_data=True)
    assert _freed(refs)
    # Ray's own functions again: nothing of ours is left in Ray
    assert ray.data.from_spark is RAYS_FROM_SPARK and ray.data.Dataset.to_spark is RAYS_TO_SPARK
