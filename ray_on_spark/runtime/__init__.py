"""The shared runtime: what runs on every host, the executors' included.

Standard library and psutil only -- no Spark, no Ray -- so that the node supervisor
(``python -m ray_on_spark.runtime.supervisor``), which every Spark task and executor actor
starts, is up in tens of milliseconds, and so that both directions can use it without
importing each other.

* ``supervisor``  -- the per-node process that owns a node's process tree (subreaper, janitor)
* ``supervised``  -- starting a command under a supervisor: its one command line, and the handle
* ``procs``       -- processes recorded by pid and create time; waiting for them to be gone
* ``ports``       -- free ports chosen by the OS; probing a port
* ``waiting``     -- the one deadline loop (``wait_until``) every wait goes through
* ``private``     -- private (0700) dirs and (0600) files, the user's cache dir
* ``host``        -- facts of this host: memory, /dev/shm, its IP towards another host; RAY_ON_SPARK_* overrides
* ``restarts``    -- the one restart cap (failures per sliding window) of every restart loop
* ``switches``    -- the library's on/off environment variables
* ``units``       -- memory sizes: parsing ``2g`` / ``512MB`` and printing them
"""
