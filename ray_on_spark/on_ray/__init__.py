"""Spark on Ray (RayDP mode): a SparkSession whose executors live in Ray actors.

* ``api``            -- init_spark / stop_spark / active_spark (RayDP's arguments)
* ``plan``           -- pure: init_spark's argument checks, placement-group bundles and Spark confs
* ``session``        -- SparkOnRay, the owner of one session: master, placement group, actors, SparkSession
* ``executor_actor`` -- the Ray actor that launches and owns one Spark executor JVM
* ``replacement``    -- the keeper that replaces lost executors (spark.executor.maxNumFailures per window)
* ``dynamic``        -- dynamic allocation: executor actors follow Spark's allocation target
* ``submit``         -- ``python -m ray_on_spark submit``: run a PySpark file or a jar with executors in Ray
* ``cds``            -- class-data archives that make those JVMs start faster
* ``jit``            -- JIT thresholds for those JVMs: less C2 work while they start
"""
