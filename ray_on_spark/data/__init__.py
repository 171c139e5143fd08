"""Data between the two engines: Spark DataFrame <-> Ray Dataset through Ray's object store.

* ``api``            -- from_spark / to_spark (RayDP's spark_dataframe_to_ray_dataset and back)
* ``holders``        -- the Ray actors that own converted blocks (a holder per cluster or session, an owner per node)
* ``lifetimes``      -- to_spark's blocks released once Spark's JVM has dropped every plan that reads them
* ``arrow_format``   -- Spark's Arrow batches made what Ray's serializer accepts (empty arrays' offsets)
* ``spark_arrow``    -- Spark's side: a DataFrame as Arrow record batches, row by row or column by column
* ``jvm_writer``     -- from_spark's first path: executors' JVMs write Arrow files to /dev/shm
                        (``java/RayOnSparkArrowFileWriter.java``, compiled with Spark's Janino)
* ``ray_entry_points`` -- ray.data.from_spark and Dataset.to_spark through ours while RayDP is not installed
* ``python_workers`` -- the functions that run in Spark tasks' Python workers (fallback path, to_spark)

Used by both directions; imports neither.
"""
