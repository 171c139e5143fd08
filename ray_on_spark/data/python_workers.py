"""from_spark's and to_spark's functions that run in Spark tasks' Python workers.

* :func:`put_partition` -- from_spark's fallback path: a task puts its partition's Arrow
  batches into its node's object store and the node's BlockOwner adopts them;
* :func:`fetch_partition` -- to_spark: a task streams its share of the Dataset's blocks
  from the object store to Spark as Arrow batches.

Both reach the driver's Ray cluster through :class:`RayAccess` and run in Python workers of
their own (:func:`conversion_workers`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple

from ray_on_spark import _ray
from ray_on_spark.data.arrow_format import complete_offsets
from ray_on_spark.data.holders import NAMESPACE
from ray_on_spark.data.spark_arrow import PYSPARK_STATE_LOCK

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow
    from pyspark import SparkContext
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayAccess:
    """How a Spark task's Python worker reaches the driver's Ray cluster and holder.

    ``node_ips``: the addresses of the cluster's nodes. A task on a host with none of them cannot
    ``ray.init()`` the GCS (Ray needs a raylet on its own host: it waited a minute and failed);
    it connects through the head's Ray Client server (``client_address``) instead, and its blocks
    go to the block owner on ``client_node_id`` (the head's node).
    """

    address: str
    holder_name: str
    token: Optional[str] = None
    client_address: Optional[str] = None
    node_ips: Tuple[str, ...] = ()
    client_node_id: Optional[str] = None

    def target(self) -> str:
        """What this worker connects to: the GCS, or the Ray Client server when its host has no node."""
        if self.client_address is None or not self.node_ips:
            return self.address
        return self.address if _host_addresses() & set(self.node_ips) else self.client_address

    def connect(self) -> "ActorHandle":
        """Connect this Python worker to Ray once (workers are reused across tasks); the holder.

        A worker connected to a cluster that is shut down exits with it (tested in Ray-on-Spark
        mode), but a Ray Client does not: a worker still connected elsewhere disconnects first.
        """
        import ray

        target = self.target()
        if ray.is_initialized() and _CONNECTED.get("target") != target:
            ray.shutdown()
            _WORKER_HANDLES.clear()
        if not ray.is_initialized():
            if self.token:
                _ray.use_auth(self.token)  # Ray caches the auth settings at first use: refreshed there
            if target == self.address:
                ray.init(address=target, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING,
                         configure_logging=False)
            else:
                logger.info("no Ray node on this host: connecting through the Ray Client server %s", target)
                ray.init(address=target, namespace=NAMESPACE)
            _CONNECTED["target"] = target
        key = self.holder_name
        if key not in _WORKER_HANDLES:  # a GCS lookup: once per worker and holder, not per task
            _WORKER_HANDLES[key] = ray.get_actor(self.holder_name, namespace=NAMESPACE)
        return _WORKER_HANDLES[key]

    def local_owner(self, holder: "ActorHandle") -> "ActorHandle":
        """This node's BlockOwner (the holder starts it on first use), asked once per worker; as a
        Ray Client, the head node's."""
        import ray

        client = _CONNECTED.get("target") not in (None, self.address)
        node = self.client_node_id if client else ray.get_runtime_context().get_node_id()
        key = (self.holder_name, node)
        if key not in _WORKER_HANDLES:
            _WORKER_HANDLES[key] = ray.get(holder.owner_for.remote(node))
        return _WORKER_HANDLES[key]


def _host_addresses() -> set:
    """Every IPv4 address of this host's interfaces (a node may advertise any of them, loopback too)."""
    import socket

    import psutil

    return {a.address for nic in psutil.net_if_addrs().values() for a in nic if a.family == socket.AF_INET}


#: In a Spark task's Python worker: what it is connected to ({"target": address}).
_CONNECTED: Dict[str, str] = {}

#: In a Spark task's Python worker: actor handles by holder name (and node), kept across tasks.
#: Holder names are unique, so a later session's tasks never find an earlier one's handles.
_WORKER_HANDLES: Dict[object, object] = {}


#: Set in the environment of the Python functions of from_spark's and to_spark's tasks.
#: Spark keeps a pool of Python workers per (python, environment), so these tasks get
#: workers of their own, and no other task (a Ray worker node's barrier task, a user's UDF)
#: ever runs in a worker that a conversion connected to Ray. That matters because such a
#: worker exits on its own about a minute after its Ray cluster goes away (Ray's core
#: worker gives up on the lost GCS), which would crash whatever task it runs then.
CONVERSION_WORKER_ENV = "RAY_ON_SPARK_CONVERSION_WORKER"


@contextlib.contextmanager
def conversion_workers(sc: "SparkContext") -> Iterator[None]:
    """Python functions wrapped inside run in the conversion tasks' own Python workers.

    pyspark copies ``sc.environment`` into each Python function when it wraps it, so the
    variable is set only while the function is wrapped.
    """
    with PYSPARK_STATE_LOCK:
        saved = sc.environment.get(CONVERSION_WORKER_ENV)
        sc.environment[CONVERSION_WORKER_ENV] = "1"
        try:
            yield
        finally:
            if saved is None:
                sc.environment.pop(CONVERSION_WORKER_ENV, None)
            else:
                sc.environment[CONVERSION_WORKER_ENV] = saved


def put_partition(access: RayAccess, conversion: str, block_bytes: int, schema: "pyarrow.Schema") -> Callable:
    """The Spark-side function of from_spark: put this partition's Arrow batches in Ray as blocks.

    Its input is Spark's own Arrow encoding of the partition (``toArrowBatchRdd``: one
    IPC record-batch message per element, the same bytes ``toPandas``/``toArrow`` send
    to the driver), read here without a copy.
    """

    def put(index: int, messages: Iterator[bytes]) -> Iterator:
        import pyarrow as pa
        import ray

        holder = access.connect()
        owner = access.local_owner(holder)
        adoptions, sizes, pending, size, rows = [], [], [], 0, 0

        def flush() -> None:
            nonlocal pending, size
            if pending:
                table = pa.Table.from_batches(pending, schema=schema)
                # The adoption runs while this task reads on: the pending call keeps the task's own
                # copy pinned until the owner has put its copy, then it is freed.
                adoptions.append(owner.adopt.remote(ray.put(table)))
                sizes.append((table.num_rows, table.nbytes))  # the metadata Ray Data needs
                pending, size = [], 0

        for message in messages:
            batch = complete_offsets(pa.ipc.read_record_batch(pa.py_buffer(message), schema))
            pending.append(batch)
            size += batch.nbytes
            rows += batch.num_rows
            if size >= block_bytes:
                flush()
        flush()
        # The owner's references, not the adoption calls' results: those belong to this Python
        # worker, which Spark may end before the driver reads them.
        refs = [ref for adopted in ray.get(adoptions) for ref in adopted]
        blocks = [(ref, n, nbytes) for ref, (n, nbytes) in zip(refs, sizes)]
        ray.get(holder.hold.remote(conversion, index, blocks))  # acknowledged before the job ends
        yield (index, len(blocks), rows)

    return put


def fetch_partition(access: RayAccess, conversion: Any, schema: "pyarrow.Schema") -> Callable:
    """The Spark-side function of to_spark: stream this partition's blocks from Ray.

    ``conversion`` is a Spark broadcast of the conversion's id: through it every plan that can
    run this function refers to the broadcast, which is how :mod:`ray_on_spark.data.lifetimes`
    learns when the blocks are no longer needed.
    """

    def fetch(batches: Iterator) -> Iterator:
        import pyarrow as pa
        import ray

        holder = access.connect()
        key = conversion.value
        for batch in batches:
            for partition in batch.column(0).to_pylist():
                for ref in ray.get(holder.part.remote(key, partition)):
                    block = ray.get(ref)
                    if not isinstance(block, pa.Table):  # a pandas block
                        block = pa.Table.from_pandas(block, schema=schema, preserve_index=False)
                    yield from block.to_batches()

    return fetch
