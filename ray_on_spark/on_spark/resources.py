"""Resource arithmetic: what each Ray node may use, given Spark's view of a host.

Everything here is pure (no Spark, no Ray, no I/O) so it can be unit tested with
plain numbers.  The rule it enforces is the one ray.util.spark breaks: on every host,
the Ray nodes we start plus the Spark executors already there never add up to more
memory than the host has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from ray_on_spark.errors import InsufficientResourcesError
from ray_on_spark.runtime.units import GIB, MIB, format_bytes

#: Fraction of a host's memory we are willing to hand out at all; the rest is
#: left to the OS, page cache and processes we do not know about.
HOST_MEMORY_SAFETY_FRACTION = 0.8
#: Ray's own default share of a node's memory that goes to the object store.
DEFAULT_OBJECT_STORE_FRACTION = 0.3
#: Ray refuses object stores smaller than this (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES).
RAY_MIN_OBJECT_STORE_BYTES = 75 * MIB
#: Below this a Ray worker node cannot even run its own agents.
MIN_WORKER_HEAP_BYTES = 256 * MIB
#: Spark's defaults for executor memory overhead (spark.executor.memoryOverhead*).
SPARK_MIN_OVERHEAD_BYTES = 384 * MIB
SPARK_DEFAULT_OVERHEAD_FACTOR = 0.1
#: Head node defaults when it runs no tasks (same as ray.util.spark).
DEFAULT_HEAD_HEAP_BYTES = 1 * GIB
DEFAULT_HEAD_OBJECT_STORE_BYTES = 1 * GIB


def executor_footprint_bytes(
    executor_memory: int,
    overhead: Optional[int] = None,
    overhead_factor: float = SPARK_DEFAULT_OVERHEAD_FACTOR,
    pyspark_memory: int = 0,
) -> int:
    """Memory one Spark executor really takes on its host (heap + overhead + Python).

    This mirrors how Spark sizes an executor container: the overhead is
    ``max(384 MiB, factor * heap)`` unless set explicitly.
    """
    if overhead is None:
        overhead = max(SPARK_MIN_OVERHEAD_BYTES, int(executor_memory * overhead_factor))
    return executor_memory + overhead + pyspark_memory


@dataclass(frozen=True)
class HostView:
    """What the tasks of one host learned about it (from the barrier allGather)."""

    total_memory: int
    shm_bytes: int
    num_ray_worker_nodes: int
    num_executors: int
    #: Memory already promised on this host outside the executors: the Ray head
    #: and the Spark driver when the driver runs here.
    reserved_bytes: int = 0


@dataclass(frozen=True)
class MemoryShare:
    heap_bytes: int
    object_store_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.heap_bytes + self.object_store_bytes


def worker_memory_share(
    host: HostView,
    executor_footprint: int,
    requested_heap: Optional[int] = None,
    requested_object_store: Optional[int] = None,
    safety_fraction: float = HOST_MEMORY_SAFETY_FRACTION,
    object_store_fraction: float = DEFAULT_OBJECT_STORE_FRACTION,
    allow_slow_storage: bool = False,
) -> MemoryShare:
    """Split what is left on a host, after its executors, between its Ray worker nodes.

    ``budget = total * safety - executors * footprint - reserved``; each Ray node gets
    ``budget / nodes``; 30 % of that is object store (capped by what /dev/shm can hold
    for this node), the rest heap.  Explicit requests are honoured only when they fit:
    the point is that the sum never exceeds the host. ``allow_slow_storage``
    (``RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE``, as in Ray) lifts the /dev/shm cap: Ray then
    backs the part that does not fit with files.
    """
    if host.num_ray_worker_nodes <= 0:
        raise ValueError("num_ray_worker_nodes must be >= 1")
    budget = (
        int(host.total_memory * safety_fraction)
        - host.num_executors * executor_footprint
        - host.reserved_bytes
    )
    per_node = budget // host.num_ray_worker_nodes
    explain = (
        f"host memory {format_bytes(host.total_memory)} x {safety_fraction} - "
        f"{host.num_executors} executor(s) x {format_bytes(executor_footprint)} - "
        f"reserved {format_bytes(host.reserved_bytes)} = {format_bytes(budget)} "
        f"for {host.num_ray_worker_nodes} Ray node(s), i.e. {format_bytes(max(per_node, 0))} each"
    )
    if per_node < MIN_WORKER_HEAP_BYTES + RAY_MIN_OBJECT_STORE_BYTES:
        raise InsufficientResourcesError(
            f"Not enough memory for a Ray worker node on this host: {explain}. "
            "Use fewer Ray worker nodes per host (larger num_cpus_worker_node), or smaller "
            "spark.executor.memory."
        )
    shm_cap = per_node if allow_slow_storage else int(host.shm_bytes * safety_fraction) // host.num_ray_worker_nodes
    min_heap = requested_heap if requested_heap is not None else MIN_WORKER_HEAP_BYTES
    if requested_object_store is not None:
        object_store = requested_object_store
        most = min(per_node - min_heap, shm_cap)
        if object_store > most:
            raise InsufficientResourcesError(
                f"object_store_memory_worker_node={object_store} ({format_bytes(object_store)}) does not fit: "
                f"{explain}; /dev/shm allows {format_bytes(shm_cap)} per node and the heap needs "
                f"{format_bytes(min_heap)}. Use object_store_memory_worker_node <= {max(most, 0)}."
            )
    else:
        # 30 % of the share, but never so much that the heap drops below its minimum.
        object_store = min(int(per_node * object_store_fraction), shm_cap, per_node - MIN_WORKER_HEAP_BYTES)
    object_store = max(object_store, RAY_MIN_OBJECT_STORE_BYTES)
    if requested_heap is not None:
        heap = requested_heap
        if heap + object_store > per_node:
            raise InsufficientResourcesError(
                f"memory_worker_node={heap} ({format_bytes(heap)}) plus object store "
                f"{format_bytes(object_store)} does not fit: {explain}. "
                f"Use memory_worker_node <= {per_node - object_store}."
            )
    else:
        heap = per_node - object_store
    return MemoryShare(heap_bytes=heap, object_store_bytes=object_store)


def healing_share(share: MemoryShare, shape: Tuple[int, int]) -> MemoryShare:
    """A healing node's share: what its host has left for it (``share``), but never more than the
    setup's nodes got (``shape``: heap, object store) -- a node placed alone on a host in a
    partial heal must leave room for the nodes that join it when slots return."""
    return MemoryShare(heap_bytes=min(share.heap_bytes, shape[0]),
                       object_store_bytes=min(share.object_store_bytes, shape[1]))


def head_memory(
    num_cpus_head: int,
    requested_heap: Optional[int],
    requested_object_store: Optional[int],
) -> MemoryShare:
    """Head node memory: small fixed defaults, since by default it runs no tasks."""
    heap = requested_heap if requested_heap is not None else DEFAULT_HEAD_HEAP_BYTES
    store = requested_object_store if requested_object_store is not None else DEFAULT_HEAD_OBJECT_STORE_BYTES
    return MemoryShare(heap_bytes=heap, object_store_bytes=max(store, RAY_MIN_OBJECT_STORE_BYTES))


def gpu_addresses_for_node(task_gpu_addresses: Sequence[str], num_gpus_requested: int) -> Tuple[str, ...]:
    """The GPU addresses a Ray node may use: exactly those Spark gave its task.

    Never a count guessed from the host: if Spark gave fewer addresses than asked
    for, that is a configuration error, not something to paper over.
    """
    addresses = tuple(str(a).strip() for a in task_gpu_addresses)
    if num_gpus_requested < 0:
        raise ValueError(f"num_gpus_worker_node={num_gpus_requested} must be >= 0")
    if num_gpus_requested > len(addresses):
        raise InsufficientResourcesError(
            f"num_gpus_worker_node={num_gpus_requested} but the Spark task was assigned "
            f"{len(addresses)} GPU address(es) {list(addresses)}; set spark.task.resource.gpu.amount "
            f"(or num_gpus_worker_node) to at most {len(addresses)}."
        )
    return addresses[:num_gpus_requested]


def head_gpu_addresses(driver_gpu_addresses: Sequence[str], num_gpus_head_node: Optional[int]) -> Tuple[str, ...]:
    """The GPU addresses the head node may use: the first N of those Spark assigned to the driver.

    The head runs on the driver, whose GPUs Spark knows only through
    ``spark.driver.resource.gpu.*``; ``None`` means none (as in ray.util.spark's
    non-global mode), never a count guessed from the host.
    """
    addresses = tuple(str(a).strip() for a in driver_gpu_addresses)
    if not num_gpus_head_node:
        return ()
    if num_gpus_head_node > len(addresses):
        raise InsufficientResourcesError(
            f"num_gpus_head_node={num_gpus_head_node} but Spark assigned the driver {len(addresses)} GPU "
            f"address(es) {list(addresses)}; set spark.driver.resource.gpu.amount (and "
            f"spark.driver.resource.gpu.discoveryScript) when creating the SparkSession, or use "
            f"num_gpus_head_node<={len(addresses)}."
        )
    return addresses[:num_gpus_head_node]


def hosts_summary(infos: Sequence[dict], driver_host: str, head_reserved: int,
                  held_by_host: Optional[Dict[str, Tuple[int, int]]] = None) -> dict:
    """Group the barrier tasks' self-descriptions by host into :class:`HostView` objects.

    ``held_by_host``: what running worker nodes of the cluster already hold on a host (total
    bytes, object store bytes) -- a healing job's nodes split only the rest of its memory. Not
    of /dev/shm: what the tasks report is its free space, which already leaves out the pages those
    nodes use (a healing node's object store is capped by the setup's, :func:`healing_share`).
    """
    held_by_host = held_by_host or {}
    by_host: dict = {}
    for info in infos:
        h = by_host.setdefault(
            info["host"],
            {"total": info["total_memory"], "shm": info["shm_bytes"], "nodes": 0, "executors": set()},
        )
        h["nodes"] += 1
        h["executors"].add(info["executor"])
    return {
        host: HostView(
            total_memory=h["total"],
            shm_bytes=h["shm"],  # free space: it already leaves out the pages the running nodes use
            num_ray_worker_nodes=h["nodes"],
            num_executors=len(h["executors"]),
            reserved_bytes=(head_reserved if host == driver_host else 0) + held_by_host.get(host, (0, 0))[0],
        )
        for host, h in by_host.items()
    }


#: ray.util.spark's strict_mode recommendations for a worker node.
STRICT_MIN_CPUS = 4
STRICT_MIN_HEAP_BYTES = 10 * GIB


def check_strict(num_cpus: int, share: MemoryShare) -> None:
    """strict_mode: refuse worker nodes below ray.util.spark's recommended size."""
    problems = []
    if num_cpus < STRICT_MIN_CPUS:
        problems.append(f"{num_cpus} CPU(s) per node (recommended >= {STRICT_MIN_CPUS}: raise num_cpus_worker_node)")
    if share.heap_bytes < STRICT_MIN_HEAP_BYTES:
        problems.append(
            f"{format_bytes(share.heap_bytes)} heap per node (recommended >= {format_bytes(STRICT_MIN_HEAP_BYTES)}: "
            "fewer nodes per host or bigger hosts)"
        )
    if problems:
        raise InsufficientResourcesError(
            "strict_mode=True and the worker node would get " + "; ".join(problems) + ". Pass strict_mode=False to accept."
        )
