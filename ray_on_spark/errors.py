"""The library's errors, as types: callers (and the library itself) branch on the class, never on text.

Bad *arguments* are ``ValueError``/``TypeError`` as in any Python API, raised before
anything starts; the message names the argument, the value and what would work.
Everything that goes wrong while a cluster starts or runs is a :class:`RayOnSparkError`;
its subclasses say which step failed, so a retry (or a user's ``except``) can pick the
cases it understands.
"""

from __future__ import annotations


class RayOnSparkError(RuntimeError):
    """Setting up or running Ray on Spark, or Spark on Ray, failed; the message says why."""


class NoSparkSessionError(RayOnSparkError):
    """There is no active SparkSession to start a Ray cluster on."""


class SparkConnectSessionError(RayOnSparkError):
    """The SparkSession is a Spark Connect client (no SparkContext here): neither direction can run on it."""


class ClusterAlreadyRunningError(RayOnSparkError):
    """A second cluster (or Spark-on-Ray session) was asked for while one runs in this process or for this user."""


class HeadStartError(RayOnSparkError):
    """The Ray head node did not start on the driver.

    The head's ports are chosen free a moment before Ray binds them, so another process
    can take one in between: this error is the one setup retries once, with new ports.
    """


class WorkerNodesStartError(RayOnSparkError):
    """The barrier Spark job holding the Ray worker nodes failed, or a node in it did not start."""


class NotEnoughSparkSlotsError(RayOnSparkError):
    """The Spark application has no free task slot for a Ray worker node."""


class NoFreeSparkSlotsError(NotEnoughSparkSlotsError):
    """A conversion's Spark job would wait for ever: long-running jobs (Ray worker nodes) hold every slot."""


class NoGlobalClusterError(RayOnSparkError):
    """No global Ray-on-Spark cluster of this user runs on this host."""


class SparkOnRayStartError(RayOnSparkError):
    """A part of a Spark-on-Ray session (master, placement group, executor) did not start."""


class ExecutorsLostError(RayOnSparkError):
    """More Spark-on-Ray executors were lost than the session replaces (``spark.executor.maxNumFailures``)."""


class RayNotConnectedError(RayOnSparkError):
    """A conversion needs this process connected to Ray (``ray.init()``) and it is not."""


class InsufficientResourcesError(ValueError):
    """A host cannot give a Ray node what it needs without overcommitting memory (bad sizes asked for)."""


class UnsupportedSparkVersionError(ImportError):
    """The installed pyspark is outside the versions this library supports (raised on import; it names them)."""
