// The executors' Arrow file writer of from_spark (ray_on_spark/data/jvm_writer.py explains the why).
// Compiled at first use with Spark's own Janino, jarred in the user's cache and added with addJar.
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

    /** Rows [0, n) of a Spark column into its Arrow vector from row ``at``; types as ray_on_spark.data.spark_arrow.COLUMNAR_TYPES. */
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
        result.add(index + "\t" + host + "\t" + done);
        return result.iterator();
    }
}
