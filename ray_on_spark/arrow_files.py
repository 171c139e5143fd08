"""Spark -> Ray without Python workers: executors' JVMs write Arrow streams to shared memory.

``from_spark``'s first path.  Each Spark task writes its partition -- Spark's own Arrow
record-batch messages (``toArrowBatchRdd``) behind the schema message, i.e. an Arrow IPC
stream -- to a file in ``/dev/shm`` (a private ``ros-conv-*`` directory), straight from
the executor's JVM.  After the job, the :class:`~ray_on_spark.dataset.BlockOwner` on a Ray
node of the same host maps each file, puts its batches into the object store as blocks
it owns, and deletes the file.

Why not through Python workers (the other path, kept as the fallback): the executor-to-
Python socket, Python's ``ray.put`` and the owner's adopting copy cost more than Spark's
Arrow encoding itself (measured, 80 MB of int64 on 2 executors: 0.37 s this way against
0.50 s through Python workers); and a session's first conversion does not have to start
Python workers and connect them to Ray (~1 s instead of ~4.5 s).

Columnar sources skip Spark's row-wise encoding too: when the DataFrame is just a columnar
scan (a cached table of numeric columns, a Parquet or ORC read; see :func:`columnar_source`),
the writer takes Spark's ColumnarBatches and copies each column into an Arrow vector --
fixed-width values in one memory copy per batch -- gathering them into record batches of
the usual size.  For 80 MB of cached int64 that job is about 0.15 s instead of 0.25 s.

The writer is ~200 lines of Java compiled at first use with Janino, the Java compiler that
Spark itself ships and uses for code generation -- no JDK needed -- and handed to the
executors with ``SparkContext.addJar``.  Most Spark classes are reached by reflection
(``MethodHandles``): Janino, resolving ``TaskContext`` and ``Utils`` at compile time, would
load classes whose optional dependencies (protobuf) Spark does not ship.  The columnar copy
names ``ColumnarBatch``, ``ColumnVector``, ``Decimal`` and ``Platform`` directly; they resolve.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import tempfile
import threading
import uuid
import zipfile
from typing import Dict, List, Optional, Tuple

from ray_on_spark import options

logger = logging.getLogger(__name__)

#: Switch: "0"/"off" makes from_spark use the Python-worker path only.
ENV = "RAY_ON_SPARK_ARROW_FILES"
SHM = "/dev/shm"
DIR_PREFIX = "ros-conv-"
CLASS_NAME = "RayOnSparkArrowFileWriter"

JAVA_SOURCE = """
public class RayOnSparkArrowFileWriter implements org.apache.spark.api.java.function.Function2 {
    private static final long serialVersionUID = 3L;
    private static final byte[] END = {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, 0, 0, 0, 0};
    private static final java.nio.file.LinkOption[] NOFOLLOW = {java.nio.file.LinkOption.NOFOLLOW_LINKS};
    private final String dir;
    private final byte[] schema;
    private final boolean columnar;  // the partitions are Spark ColumnarBatches, not Spark's Arrow messages
    private final int batchRows;  // rows per Arrow record batch written from ColumnarBatches (at most)
    private static final int INITIAL_ROWS = 1 << 20;  // at most, rows the vectors of a record batch start with

    public RayOnSparkArrowFileWriter(String dir, byte[] schema, Boolean columnar, Integer batchRows) {
        this.dir = dir;
        this.schema = schema;
        this.columnar = columnar.booleanValue();
        this.batchRows = batchRows.intValue();
    }

    private static Object call(String cls, String method, Class ret, Object self) throws Throwable {
        java.lang.invoke.MethodHandles.Lookup lookup = java.lang.invoke.MethodHandles.publicLookup();
        java.lang.invoke.MethodType type = java.lang.invoke.MethodType.methodType(ret);
        if (self == null) {
            return lookup.findStatic(Class.forName(cls), method, type).invokeWithArguments(new Object[0]);
        }
        return lookup.findVirtual(Class.forName(cls), method, type).invokeWithArguments(new Object[] {self});
    }

    /** The conversion's directory, made (0700) on this host by the block owner before the job. */
    private java.nio.file.Path privateDir() throws java.io.IOException {
        java.nio.file.Path d = java.nio.file.Paths.get(dir);
        if (!java.nio.file.Files.isDirectory(d, NOFOLLOW)) {
            throw new java.io.IOException(dir + " does not exist: the conversion has ended, or this host has no "
                + "Ray node to load the data (set RAY_ON_SPARK_ARROW_FILES=0 to convert through Python workers)");
        }
        Object owner = java.nio.file.Files.getAttribute(d, "unix:uid", NOFOLLOW);
        Object me = java.nio.file.Files.getAttribute(java.nio.file.Paths.get("/proc/self"), "unix:uid",
            new java.nio.file.LinkOption[0]);
        java.util.Set perms = java.nio.file.Files.getPosixFilePermissions(d, NOFOLLOW);
        if (!owner.equals(me) || !java.nio.file.attribute.PosixFilePermissions.toString(perms).equals("rwx------")) {
            throw new java.io.IOException(dir + " is not a private directory of uid " + me);
        }
        return d;
    }

    public Object call(Object index, Object messages) throws Exception {
        try {
            return write(((Integer) index).intValue(), (java.util.Iterator) messages);
        } catch (Exception e) {
            throw e;
        } catch (Throwable t) {
            throw new RuntimeException(t);
        }
    }

    /** ColumnarBatches into Arrow record batches of about batchRows rows, column by column (no rows are made). */
    private void writeColumnar(java.nio.channels.FileChannel file, java.util.Iterator batches) throws Throwable {
        org.apache.arrow.memory.RootAllocator allocator = new org.apache.arrow.memory.RootAllocator(Long.MAX_VALUE);
        try {
            org.apache.arrow.vector.types.pojo.Schema arrowSchema =
                org.apache.arrow.vector.ipc.message.MessageSerializer.deserializeSchema(
                    new org.apache.arrow.vector.ipc.ReadChannel(java.nio.channels.Channels.newChannel(
                        new java.io.ByteArrayInputStream(schema))));
            org.apache.arrow.vector.VectorSchemaRoot root =
                org.apache.arrow.vector.VectorSchemaRoot.create(arrowSchema, allocator);
            org.apache.arrow.vector.ipc.WriteChannel channel =
                new org.apache.arrow.vector.ipc.WriteChannel(file);  // Arrow's buffers go straight to the file
            try {
                int filled = 0;
                int capacity = 0;
                while (batches.hasNext()) {
                    org.apache.spark.sql.vectorized.ColumnarBatch batch =
                        (org.apache.spark.sql.vectorized.ColumnarBatch) batches.next();
                    int n = batch.numRows();
                    if (n == 0) continue;
                    if (filled > 0 && filled + n > capacity) {
                        flush(root, filled, channel);
                        filled = 0;
                    }
                    if (filled == 0) {
                        capacity = Math.max(batchRows, n);
                        for (int c = 0; c < root.getFieldVectors().size(); c++) {
                            org.apache.arrow.vector.FieldVector v = root.getVector(c);
                            v.setInitialCapacity(Math.min(capacity, INITIAL_ROWS));  // grows as needed
                            v.allocateNew();  // zeroed: every row is null until it is set
                        }
                    }
                    for (int c = 0; c < batch.numCols(); c++) {
                        fill(root.getVector(c), batch.column(c), filled, n);
                    }
                    filled += n;
                }
                if (filled > 0) flush(root, filled, channel);
            } finally {
                root.close();
            }
        } finally {
            allocator.close();
        }
    }

    private static void flush(org.apache.arrow.vector.VectorSchemaRoot root, int rows,
                              org.apache.arrow.vector.ipc.WriteChannel channel) throws java.io.IOException {
        for (int c = 0; c < root.getFieldVectors().size(); c++) {
            root.getVector(c).setValueCount(rows);
        }
        root.setRowCount(rows);
        org.apache.arrow.vector.ipc.message.ArrowRecordBatch records =
            new org.apache.arrow.vector.VectorUnloader(root).getRecordBatch();
        try {
            org.apache.arrow.vector.ipc.message.MessageSerializer.serialize(channel, records);
        } finally {
            records.close();
        }
    }

    /** A fixed-width column at row ``at``: its values in one copy (little-endian, as Arrow's), then validity. */
    private static void copy(org.apache.arrow.vector.FieldVector vector, Object values, long offset, int width, int at,
                             org.apache.spark.sql.vectorized.ColumnVector col, int n) {
        org.apache.arrow.vector.BaseFixedWidthVector v = (org.apache.arrow.vector.BaseFixedWidthVector) vector;
        while (v.getValueCapacity() < at + n) v.reAlloc();  // doubles; the new part is zeroed (null)
        org.apache.spark.unsafe.Platform.copyMemory(values, offset, null,
            v.getDataBuffer().memoryAddress() + (long) at * width, (long) n * width);
        org.apache.arrow.memory.ArrowBuf validity = v.getValidityBuffer();
        if (col.hasNull()) {
            for (int r = 0; r < n; r++) {
                if (!col.isNullAt(r)) org.apache.arrow.vector.BitVectorHelper.setBit(validity, (long) (at + r));
            }
            return;
        }
        int r = at;
        int end = at + n;
        while (r < end && (r & 7) != 0) org.apache.arrow.vector.BitVectorHelper.setBit(validity, (long) r++);
        int bytes = (end - r) >> 3;
        if (bytes > 0) {
            validity.setOne((long) (r >> 3), (long) bytes);
            r += bytes << 3;
        }
        while (r < end) org.apache.arrow.vector.BitVectorHelper.setBit(validity, (long) r++);
    }

    /** Row ``r`` (not null) of a fixed-width Spark column into row ``index`` of its Arrow vector. */
    private static void setRow(org.apache.arrow.vector.FieldVector vector,
                               org.apache.spark.sql.vectorized.ColumnVector col, int index, int r) {
        if (vector instanceof org.apache.arrow.vector.BigIntVector) {
            ((org.apache.arrow.vector.BigIntVector) vector).setSafe(index, col.getLong(r));
        } else if (vector instanceof org.apache.arrow.vector.TimeStampVector) {
            ((org.apache.arrow.vector.TimeStampVector) vector).setSafe(index, col.getLong(r));
        } else if (vector instanceof org.apache.arrow.vector.IntVector) {
            ((org.apache.arrow.vector.IntVector) vector).setSafe(index, col.getInt(r));
        } else if (vector instanceof org.apache.arrow.vector.DateDayVector) {
            ((org.apache.arrow.vector.DateDayVector) vector).setSafe(index, col.getInt(r));
        } else if (vector instanceof org.apache.arrow.vector.Float8Vector) {
            ((org.apache.arrow.vector.Float8Vector) vector).setSafe(index, col.getDouble(r));
        } else if (vector instanceof org.apache.arrow.vector.Float4Vector) {
            ((org.apache.arrow.vector.Float4Vector) vector).setSafe(index, col.getFloat(r));
        } else if (vector instanceof org.apache.arrow.vector.SmallIntVector) {
            ((org.apache.arrow.vector.SmallIntVector) vector).setSafe(index, col.getShort(r));
        } else if (vector instanceof org.apache.arrow.vector.TinyIntVector) {
            ((org.apache.arrow.vector.TinyIntVector) vector).setSafe(index, col.getByte(r));
        } else {
            throw new IllegalArgumentException("no columnar Arrow writer for " + vector.getField());
        }
    }

    /** Rows [0, n) of a Spark column into its Arrow vector from row ``at``; types as arrow_files.COLUMNAR_TYPES. */
    private static void fill(org.apache.arrow.vector.FieldVector vector, org.apache.spark.sql.vectorized.ColumnVector col,
                             int at, int n) {
        if (col.hasNull() && !(col instanceof org.apache.spark.sql.execution.vectorized.WritableColumnVector)
            && vector instanceof org.apache.arrow.vector.BaseFixedWidthVector
            && !(vector instanceof org.apache.arrow.vector.BitVector)
            && !(vector instanceof org.apache.arrow.vector.DecimalVector)) {
            // Other vectors (e.g. ArrowColumnVector) may refuse to read a null row in bulk: row by row.
            for (int r = 0; r < n; r++) {
                if (!col.isNullAt(r)) setRow(vector, col, at + r, r);
            }
            return;
        }
        if (vector instanceof org.apache.arrow.vector.BigIntVector
            || vector instanceof org.apache.arrow.vector.TimeStampVector) {
            copy(vector, col.getLongs(0, n), org.apache.spark.unsafe.Platform.LONG_ARRAY_OFFSET, 8, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.IntVector
                   || vector instanceof org.apache.arrow.vector.DateDayVector) {
            copy(vector, col.getInts(0, n), org.apache.spark.unsafe.Platform.INT_ARRAY_OFFSET, 4, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.Float8Vector) {
            copy(vector, col.getDoubles(0, n), org.apache.spark.unsafe.Platform.DOUBLE_ARRAY_OFFSET, 8, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.Float4Vector) {
            copy(vector, col.getFloats(0, n), org.apache.spark.unsafe.Platform.FLOAT_ARRAY_OFFSET, 4, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.SmallIntVector) {
            copy(vector, col.getShorts(0, n), org.apache.spark.unsafe.Platform.SHORT_ARRAY_OFFSET, 2, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.TinyIntVector) {
            copy(vector, col.getBytes(0, n), org.apache.spark.unsafe.Platform.BYTE_ARRAY_OFFSET, 1, at, col, n);
        } else if (vector instanceof org.apache.arrow.vector.BitVector) {
            org.apache.arrow.vector.BitVector v = (org.apache.arrow.vector.BitVector) vector;
            for (int r = 0; r < n; r++) {
                if (!col.isNullAt(r)) v.setSafe(at + r, col.getBoolean(r) ? 1 : 0);
            }
        } else if (vector instanceof org.apache.arrow.vector.DecimalVector) {
            org.apache.arrow.vector.DecimalVector v = (org.apache.arrow.vector.DecimalVector) vector;
            int precision = v.getPrecision();
            int scale = v.getScale();
            for (int r = 0; r < n; r++) {
                if (col.isNullAt(r)) continue;
                org.apache.spark.sql.types.Decimal d = col.getDecimal(r, precision, scale);
                if (precision <= 18) v.setSafe(at + r, d.toUnscaledLong());
                else v.setSafe(at + r, d.toJavaBigDecimal());
            }
        } else if (vector instanceof org.apache.arrow.vector.BaseVariableWidthVector) {
            org.apache.arrow.vector.BaseVariableWidthVector v = (org.apache.arrow.vector.BaseVariableWidthVector) vector;
            boolean text = vector instanceof org.apache.arrow.vector.VarCharVector;
            for (int r = 0; r < n; r++) {
                if (!col.isNullAt(r)) v.setSafe(at + r, text ? col.getUTF8String(r).getBytes() : col.getBinary(r));
            }
        } else if (vector instanceof org.apache.arrow.vector.BaseLargeVariableWidthVector) {
            org.apache.arrow.vector.BaseLargeVariableWidthVector v =
                (org.apache.arrow.vector.BaseLargeVariableWidthVector) vector;
            boolean text = vector instanceof org.apache.arrow.vector.LargeVarCharVector;
            for (int r = 0; r < n; r++) {
                if (!col.isNullAt(r)) v.setSafe(at + r, text ? col.getUTF8String(r).getBytes() : col.getBinary(r));
            }
        } else {
            throw new IllegalArgumentException("no columnar Arrow writer for " + vector.getField());
        }
    }

    private java.util.Iterator write(int index, java.util.Iterator messages) throws Throwable {
        java.nio.file.Path d = privateDir();
        Object ctx = call("org.apache.spark.TaskContext", "get", Class.forName("org.apache.spark.TaskContext"), null);
        Object attempt = ctx == null ? (Object) Long.valueOf(0L)
            : call("org.apache.spark.TaskContext", "taskAttemptId", long.class, ctx);  // unique in the application
        String name = "part-" + index + "-" + attempt;
        java.nio.file.Path partial = d.resolve(name + ".partial");
        java.nio.file.Path done = d.resolve(name + ".arrows");
        boolean complete = false;
        java.nio.channels.FileChannel file = java.nio.channels.FileChannel.open(partial, new java.nio.file.OpenOption[] {
            java.nio.file.StandardOpenOption.CREATE_NEW, java.nio.file.StandardOpenOption.WRITE,
            java.nio.file.LinkOption.NOFOLLOW_LINKS});
        java.io.OutputStream out = java.nio.channels.Channels.newOutputStream(file);
        try {
            try {
                out.write(schema);
                if (columnar) {
                    writeColumnar(file, messages);
                } else {
                    while (messages.hasNext()) {
                        out.write((byte[]) messages.next());
                    }
                }
                out.write(END);
            } finally {
                out.close();
            }
            java.nio.file.Files.move(partial, done, new java.nio.file.CopyOption[] {
                java.nio.file.StandardCopyOption.ATOMIC_MOVE});
            complete = true;
        } finally {
            if (!complete) {
                java.nio.file.Files.deleteIfExists(partial);  // a failed attempt leaves nothing in memory
            }
        }
        String host = (String) call("org.apache.spark.util.Utils", "localHostName", String.class, null);
        java.util.List result = new java.util.ArrayList();
        result.add(index + "\\t" + host + "\\t" + done);
        return result.iterator();
    }
}
"""

_LOCK = threading.Lock()
_WRITER: List[object] = []  # [JavaSparkContext, the writer class loaded in the driver JVM]: the current one


def enabled() -> bool:
    return options.switched_on(os.environ.get(ENV)) and os.path.isdir(SHM) and os.access(SHM, os.W_OK)


def jar_path() -> str:
    """The writer's jar, content-addressed in the user's cache (made once, reused by every session)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(JAVA_SOURCE.encode()).hexdigest()[:16]
    return os.path.join(base, "ray_on_spark", "jars", f"arrow-file-writer-{digest}.jar")


def writer_class(sc):
    """The writer class in the driver's JVM; compiled, jarred and given to the executors once per SparkContext."""
    with _LOCK:
        if not _WRITER or _WRITER[0] is not sc._jsc:  # a new SparkContext needs the jar added again
            compiler = sc._jvm.org.codehaus.janino.SimpleCompiler()
            compiler.cook(JAVA_SOURCE)
            path = jar_path()
            if not os.path.exists(path):
                codes = compiler.getBytecodes()
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
                with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w") as z:
                    for name in codes.keySet():
                        z.writestr(name.replace(".", "/") + ".class", bytes(codes.get(name)))
                os.replace(tmp, path)  # atomic: a concurrent driver sees a whole jar or none
            sc._jsc.addJar(path)  # executors fetch it before their next task
            _WRITER[:] = [sc._jsc, compiler.getClassLoader().loadClass(CLASS_NAME)]
        return _WRITER[1]


def room(shm_free: int, object_store_unused: int) -> int:
    """Bytes of /dev/shm the files may use: what is free, less what Ray's object store may still take.

    Ray's object store is a file in /dev/shm too, and tmpfs counts its pages only as they are
    used, so its unused capacity must stay free (a full tmpfs is a SIGBUS in Ray).
    """
    return max(0, shm_free - object_store_unused)


def fits(estimate: int, room_bytes: int) -> bool:
    """Whether Spark's size estimate of the data is at most half the room (files live only until loaded)."""
    return 2 * estimate <= room_bytes


def size_estimate(df) -> int:
    """Spark's estimate of ``df``'s size in bytes (0 when it has none, as Spark's own planner would assume small)."""
    try:
        return int(df._jdf.queryExecution().optimizedPlan().stats().sizeInBytes().toString())
    except Exception as e:
        logger.debug("no size estimate: %s", e)
        return 0


def new_directory() -> str:
    """A conversion's directory name on every executor host (made there, private, by the first task)."""
    return os.path.join(SHM, f"{DIR_PREFIX}{os.getuid()}-{uuid.uuid4().hex}")


def write_partitions(df, schema, directory: str) -> List[Tuple[int, str, str]]:
    """Run the Spark job: each task writes its partition as an Arrow stream file in ``directory``.

    ``directory`` must exist on every executor host (the block owners' ``watch`` makes it).
    Returns, per partition, (index, host, path).
    """
    sc = df.sparkSession.sparkContext
    jvm = sc._jvm
    cls = writer_class(sc)
    rdd = None
    source = columnar_source(df)
    if source is not None:
        try:
            rdd = source.executeColumnar()
            logger.debug("from_spark: columnar source %s", source.nodeName())
        except Exception as e:  # Spark's row-wise encoding still works
            logger.debug("from_spark: %s cannot give ColumnarBatches: %s", source.nodeName(), e)
    columnar = rdd is not None
    if not columnar:
        from ray_on_spark.dataset import arrow_batch_rdd

        rdd = arrow_batch_rdd(df)
    args = sc._gateway.new_array(jvm.java.lang.Object, 4)
    args[0] = directory
    args[1] = bytearray(schema.serialize().to_pybytes())
    args[2] = columnar
    args[3] = record_batch_rows(df)
    writer = cls.getConstructors()[0].newInstance(args)
    jrdd = jvm.org.apache.spark.api.java.JavaRDD.fromRDD(rdd, jvm.scala.reflect.ClassTag.Any())
    lines = jrdd.mapPartitionsWithIndex(writer, False).collect()
    out = []
    for line in lines:
        index, host, path = str(line).split("\t")
        out.append((int(index), host, path))
    return sorted(out)


#: Spark SQL types (``DataType.typeName()``) the writer copies column by column from a ColumnarBatch.
COLUMNAR_TYPES = frozenset({"boolean", "byte", "short", "integer", "long", "float", "double", "date", "timestamp",
                            "timestamp_ntz", "string", "binary", "decimal"})
#: Plan nodes between a DataFrame and its columnar scan that change neither rows nor columns.
_PASS_THROUGH = ("WholeStageCodegenExec", "ColumnarToRowExec", "InputAdapter")


def record_batch_rows(df) -> int:
    """Rows per Arrow record batch: the user's ``maxRecordsPerBatch`` when set (<= 0: no limit), else a few MiB."""
    from ray_on_spark.dataset import _BATCH_CONF, _PYSPARK_STATE_LOCK, batch_rows

    with _PYSPARK_STATE_LOCK:  # arrow_batch_rdd sets the conf for a moment under this lock
        user = df.sparkSession.conf.get(_BATCH_CONF, None)
    if user is not None:
        return int(user) if int(user) > 0 else 2**31 - 1
    return batch_rows(df._jdf.schema().defaultSize())


def columnar_types_only(type_names: List[str]) -> bool:
    """Whether every column has a type the columnar writer copies (nested types go row by row)."""
    return all(t in COLUMNAR_TYPES for t in type_names)


def columnar_source(df):
    """The JVM plan node that yields ``df``'s rows as ColumnarBatches, or None.

    When ``df`` is a columnar scan and nothing else -- a cached table of numeric columns,
    a Parquet or ORC read -- its columns are copied into Arrow vectors as they are, skipping
    Spark's row-by-row Arrow encoding (``toArrowBatchRdd``; 80 MB of cached int64: the whole
    job ~0.15 s instead of the encoding's ~0.25 s).
    Anything on top of the scan (a filter, a projection, adaptive execution) goes row by row.
    """
    if sys.byteorder != "little" or not columnar_types_only([f.dataType.typeName() for f in df.schema.fields]):
        return None  # the writer copies fixed-width values as they lie in memory: Arrow's order is little-endian
    try:
        plan = df._jdf.queryExecution().executedPlan()
        while plan.getClass().getSimpleName() in _PASS_THROUGH:
            plan = plan.child()
        if plan.supportsColumnar() and plan.schema().simpleString() == df._jdf.schema().simpleString():
            return plan  # the same columns, names and types, in the same order
    except Exception as e:  # another Spark's plan classes: Spark's row-wise encoding still works
        logger.debug("from_spark: no columnar source: %s", e)
    return None


LOOPBACK = "loopback"


def alive_nodes() -> List[dict]:
    """Ray's alive nodes, as ``ray.nodes()`` describes them (one GCS query per conversion)."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def host_nodes(alive: List[dict], driver_node: str) -> Dict[str, str]:
    """The alive nodes by IP address, one node id per host (any node there can read the files).

    Executors bound to a loopback address run on the driver's host: key ``LOOPBACK`` is
    ``driver_node``, the node this driver is connected to.
    """
    out: Dict[str, str] = {}
    for n in alive:
        out.setdefault(n["NodeManagerAddress"], n["NodeID"])
    out[LOOPBACK] = driver_node
    return out


def object_store_bytes_by_node(alive: List[dict]) -> Dict[str, int]:
    """For every alive node: the object store capacity of all the nodes on its host (its IP).

    Several Ray nodes can share a host, and so its /dev/shm: all their stores count there.
    """
    by_ip: Dict[str, int] = {}
    for n in alive:
        ip = n["NodeManagerAddress"]
        by_ip[ip] = by_ip.get(ip, 0) + int(n.get("Resources", {}).get("object_store_memory", 0))
    return {n["NodeID"]: by_ip[n["NodeManagerAddress"]] for n in alive}


def node_for(host: str, nodes: Dict[str, str]) -> Optional[str]:
    """The Ray node on Spark's executor ``host`` (an IP or a name), or None."""
    if host in nodes:
        return nodes[host]
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return None
    if ip.startswith("127.") or host == "localhost":
        return nodes.get(LOOPBACK)
    return nodes.get(ip)
