"""Ray on Spark: a Ray head on the Spark driver, Ray worker nodes in one long-running barrier Spark job.

* ``api``            -- setup_ray_cluster / shutdown_ray_cluster / ray_cluster / active_cluster / setup_global_ray_cluster
* ``arguments``      -- pure: setup_ray_cluster's arguments checked on their own (types, ranges, node options)
* ``plan``           -- pure: checked arguments + Spark facts -> the cluster's plan (node shape, slots, head share)
* ``resources``      -- pure arithmetic: memory shares per host, GPUs, strict mode
* ``ray_start``      -- ``ray start``'s command line and environment, for the head and the worker nodes
* ``cluster``        -- RayClusterOnSpark, the owner of one cluster's processes and barrier job
* ``worker_task``    -- the barrier Spark task body that runs one Ray worker node
* ``join_head``      -- a worker node's ``ray start``, held until the head's GCS answers (no 1-2 s retry sleeps)
* ``nodes``          -- pure: the cluster's nodes as the GCS lists them (ours, newest per partition, dead)
* ``diagnostics``    -- pure: why a cluster did not start, in words (task errors, the head's log, a fix)
* ``hooks``          -- start hooks (RAY_ON_SPARK_START_HOOK): user code called at Ray's moments
* ``databricks``     -- the built-in hook on a Databricks runtime: proxy link, idle shutdown, job group, env
* ``progress``       -- start-up progress lines, visible in a notebook's cell
* ``global_cluster`` -- setup_global_ray_cluster's lock, published address/token, blocking wait
* ``autoscaling``    -- Ray's autoscaler driving one-task Spark jobs (launcher in the driver, provider in the head)
"""
