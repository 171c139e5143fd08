"""Autoscaling (``min_worker_nodes < max_worker_nodes``): Ray's autoscaler decides, Spark runs.

* ``launcher`` -- in the driver: the node launcher that turns create/terminate into one-task
  Spark jobs, Ray's autoscaler config and the one node shape (pure)
* ``start``    -- in the driver, at setup: size the one node shape, start the launcher, write Ray's config
* ``provider`` -- in the head's monitor process: the NodeProvider Ray's autoscaler loads, which
  forwards its decisions to the launcher over loopback HTTP with a secret
"""
