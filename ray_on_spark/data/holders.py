"""The owners of converted data: Ray actors that keep Datasets' blocks alive, and free them.

Ray 2.56 removed ``ray.put(..., _owner=...)``: an object is owned by the process that put
it, and neither an executor's JVM nor a Spark task's Python worker lives long enough. So:

* :class:`DataHolder` -- one per Ray-on-Spark cluster or Spark-on-Ray session (0 CPUs, on
  the head node); lends block references to to_spark's tasks, and starts
* :class:`BlockOwner` -- one per node that converts: puts the blocks made on its host (from
  the executors' Arrow files, or adopted from a Python worker) and owns them.

``stop_spark(cleanup_data=True)`` or ``shutdown_ray_cluster()`` kills a holder and its
owners, which frees the blocks; with ``stop_spark(cleanup_data=False)`` they stay, and so
do the Datasets.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional

from ray_on_spark.data.arrow_format import complete_offsets
from ray_on_spark.runtime.waiting import deadline_after, poll_until, remaining

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

NAMESPACE = "ray_on_spark"


class DataHolder:
    """Owns the blocks of converted data and lends their references out (a Ray actor)."""

    def __init__(self):
        self.blocks: Dict[str, Dict[int, list]] = {}
        self.owners: Dict[str, "ActorHandle"] = {}  # node id -> BlockOwner actor (the holder's children)

    def hold(self, conversion: str, partition: int, refs: list) -> None:
        # A retried Spark task replaces its earlier attempt's blocks (which are then freed).
        self.blocks.setdefault(conversion, {})[partition] = refs

    def take(self, conversion: str) -> list:
        parts = self.blocks.get(conversion, {})
        return [ref for p in sorted(parts) for ref in parts[p]]

    def part(self, conversion: str, partition: int) -> list:
        return self.blocks.get(conversion, {}).get(partition, [])

    def release(self, conversion: str) -> None:
        self.blocks.pop(conversion, None)

    def ping(self) -> bool:
        return True

    def owner_for(self, node_id: str) -> "ActorHandle":
        """The BlockOwner on ``node_id``, started on first use.

        Started by the holder, so it is the holder's child: it dies with the holder, which
        dies with the driver -- nothing is left in a shared Ray cluster after the driver goes.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if node_id not in self.owners:
            self.owners[node_id] = ray.remote(BlockOwner).options(
                num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote()
        return self.owners[node_id]

    def owner_handles(self) -> list:
        return list(self.owners.values())


class BlockOwner:
    """Owns the blocks made on one node (a Ray actor pinned to that node, a child of the holder).

    Ray 2.56 removed ``ray.put(..., _owner=...)``, so an object is owned by the process
    that put it, and neither an executor's JVM nor a Spark task's Python worker lives long
    enough.  This actor puts the blocks itself: from the Arrow files an executor on its
    host wrote (:meth:`watch`, :meth:`collect`), or, on the fallback path, by adopting a
    block a task's Python worker put on this node (it maps it zero-copy and puts it again).

    It keeps no reference of its own.  As the owner it counts everyone who borrows a
    block (the task, the holder, then the driver's Dataset), so a block lives while a
    Dataset refers to it and is freed when the last one is dropped, as any ``ray.put``
    object is; and it is freed at once when this actor dies (``cleanup_data=True``).
    """

    def __init__(self):
        self._watches: Dict[str, "_Watch"] = {}

    def watch(self, directory: str, block_bytes: int) -> int:
        """Make the conversion's private directory on this host and load its files as tasks finish them.

        Returns the bytes free in /dev/shm here. The executors' writer refuses to make the
        directory itself, so a task attempt that runs after the conversion ended (a late
        speculative copy, a zombie of a failed job) cannot leave a file behind.
        """
        if directory not in self._watches:
            os.mkdir(directory, 0o700)
            self._watches[directory] = _Watch(self, directory, block_bytes)
        return shutil.disk_usage(os.path.dirname(directory)).free

    def collect(self, directory: str, paths: List[str], block_bytes: int) -> List[list]:
        """The blocks of each of ``paths`` (the job's successful tasks' files); the watch ends.

        A file the watch has not loaded yet is loaded now; blocks of other files (a failed
        or speculative task attempt's) are dropped, which frees them.
        """
        watch = self._watches.pop(directory, None)
        loaded = watch.stop() if watch is not None else {}  # raises what the watch's loading raised
        return [loaded[path] if path in loaded else self.load(path, block_bytes) for path in paths]

    def load(self, path: str, block_bytes: int) -> list:
        """Put an Arrow stream file that a Spark executor on this host wrote (jvm_writer) as our blocks.

        The file is mapped, not read; each block (batches up to ``block_bytes``) is copied
        once, into the object store; the file is deleted. Returns (ref, rows, bytes) per block.
        """
        import pyarrow as pa
        import ray

        blocks, pending, size = [], [], 0

        def flush(schema: "pyarrow.Schema") -> None:
            nonlocal pending, size
            table = pa.Table.from_batches(pending, schema=schema)
            blocks.append((ray.put(table), table.num_rows, table.nbytes))
            pending, size = [], 0

        with pa.memory_map(path) as source:
            reader = pa.ipc.open_stream(source)
            for batch in reader:
                batch = complete_offsets(batch)
                pending.append(batch)
                size += batch.nbytes
                if size >= block_bytes:
                    flush(reader.schema)
            if pending:
                flush(reader.schema)
        os.unlink(path)  # (a file that failed to load stays for remove_dir)
        return blocks

    def remove_dir(self, directory: str) -> None:
        """Remove a conversion's file directory on this host (what a failed or retried task left)."""
        watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                watch.stop()
            except Exception as e:  # the conversion has failed already; its error is the one to report
                logger.debug("arrow files of %s: %s", directory, e)
        shutil.rmtree(directory, ignore_errors=True)

    def adopt(self, block: "pyarrow.Table") -> list:
        """Put ``block`` (a Spark task's table, passed by reference and mapped zero-copy) as our own."""
        import ray

        return [ray.put(block)]

    def ping(self) -> bool:
        return True


class _Watch:
    """A thread in a BlockOwner that loads a conversion's finished files as they appear.

    A task renames its file to ``*.arrows`` once it is complete, so any such file can be
    loaded. Loading while the job runs takes the copy into the object store off the
    conversion's critical path.
    """

    POLL_S = 0.005
    JOIN_S = 300.0

    def __init__(self, owner: BlockOwner, directory: str, block_bytes: int):
        self.owner, self.directory, self.block_bytes = owner, directory, block_bytes
        self.loaded: Dict[str, list] = {}
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ros-arrow-files", daemon=True)
        self._thread.start()

    def _ready(self) -> List[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:  # no task has started yet
            return []
        paths = (os.path.join(self.directory, n) for n in sorted(names) if n.endswith(".arrows"))
        return [p for p in paths if p not in self.loaded]

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            for path in self._ready():
                if self._stop.is_set():
                    return
                try:
                    self.loaded[path] = self.owner.load(path, self.block_bytes)
                except BaseException as e:  # kept for stop() to raise: the conversion fails with it
                    self.error = e
                    return

    def stop(self) -> Dict[str, list]:
        """End the thread (after the file it is loading) and return what it loaded, by path."""
        self._stop.set()
        self._thread.join(timeout=self.JOIN_S)
        if self._thread.is_alive():
            raise RuntimeError(f"loading the Arrow files of {self.directory} took over {self.JOIN_S:.0f}s")
        if self.error is not None:
            raise self.error
        loaded, self.loaded = self.loaded, {}  # the caller's now: dropping it frees those blocks at once
        return loaded


_HOLDERS: Dict[str, "Holder"] = {}  # Ray cluster id -> holder handle (for the plain-Ray case)


def holder_for_current_cluster() -> "Holder":
    """The holder of the open Spark-on-Ray session's scope, else one per Ray cluster, made on demand."""
    import ray

    if _SESSION_SCOPE is not None:
        return _SESSION_SCOPE.get()
    key = ray.get_runtime_context().get_job_id() + ray.get_runtime_context().gcs_address
    if key not in _HOLDERS:
        _HOLDERS[key] = new_holder()
    return _HOLDERS[key]


def release_holders() -> None:
    """Kill the holders made outside a Spark-on-Ray session (their data is freed).

    Only while this process is connected to Ray: after a ``ray.shutdown()`` the handles are
    dead ends (a call would make Ray connect again), and the holders go with their cluster.
    """
    import ray

    if ray.is_initialized():
        for holder in _HOLDERS.values():
            holder.kill()
    _HOLDERS.clear()


@dataclass(frozen=True)
class Holder:
    """A holder actor's handle and its name (Spark tasks look it up by name)."""

    handle: "ActorHandle"
    name: str

    def kill(self) -> None:
        """Kill the holder and its block owners: the data they own is freed."""
        import ray

        try:
            owners = ray.get(self.handle.owner_handles.remote(), timeout=10)
        except Exception as e:  # already gone with its node
            logger.debug("data holder %s: %s", self.name, e)
            owners = []
        handles = [self.handle] + owners
        for handle in handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception as e:
                logger.debug("killing %s: %s", handle, e)
        # ray.kill is asynchronous: return once they are dead, so the data is really gone.
        deadline = deadline_after(15)
        for handle in handles:
            poll_until(lambda: _dead(handle), timeout=remaining(deadline), poll=0.05)


def _dead(handle: "ActorHandle") -> bool:
    """Whether the actor is gone (a ping fails with RayActorError); a slow answer counts as alive."""
    import ray

    try:
        ref = handle.ping.remote()
    except Exception as e:  # Ray no longer knows the actor at all (killed, and its entry gone): dead
        logger.debug("ping not submitted: %s", e)
        return True
    try:
        ray.get(ref, timeout=1)
    except ray.exceptions.RayActorError:
        return True
    except ray.exceptions.GetTimeoutError:
        pass
    return False


def new_holder() -> Holder:
    """A holder actor on the head node: it must outlive every worker node and Spark task."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    head = next((n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n["Resources"]),
                None)
    name = f"ros-data-{uuid.uuid4().hex[:12]}"
    options = dict(num_cpus=0, name=name, namespace=NAMESPACE, max_restarts=0)
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=True)
    return Holder(ray.remote(DataHolder).options(**options).remote(), name)




class HolderScope:
    """The holder of one Spark-on-Ray session's converted data, made on the session's first conversion.

    A session opens its scope (:func:`open_session_scope`) when it starts, and closes it
    when it stops: with ``free=True`` (``stop_spark(cleanup_data=True)``) the holder is
    killed and the data freed; otherwise the Datasets stay readable.
    """

    def __init__(self) -> None:
        self.holder: Optional[Holder] = None

    def get(self) -> Holder:
        if self.holder is None:
            self.holder = new_holder()
        return self.holder

    def release(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder = None


#: The scope of the Spark-on-Ray session that runs in this process, if one does.
_SESSION_SCOPE: Optional[HolderScope] = None


def open_session_scope() -> HolderScope:
    """A new scope that conversions use until :func:`close_session_scope` (one session at a time)."""
    global _SESSION_SCOPE
    _SESSION_SCOPE = HolderScope()
    return _SESSION_SCOPE


#: Scopes of sessions stopped with ``cleanup_data=False``: their data lives until :func:`release_kept_scopes`.
_KEPT_SCOPES: List[HolderScope] = []


def close_session_scope(scope: HolderScope, free: bool) -> None:
    """End ``scope``; ``free``: kill its holder, which frees the data it owns; else keep it for later."""
    global _SESSION_SCOPE
    if _SESSION_SCOPE is scope:
        _SESSION_SCOPE = None
    if free:
        scope.release()
    elif scope.holder is not None:
        _KEPT_SCOPES.append(scope)


def release_kept_scopes() -> int:
    """Kill the holders of the sessions stopped with ``cleanup_data=False``; return how many there were.

    Their Datasets' blocks are freed.  Only while connected to Ray (after ``ray.shutdown()``
    the holders have gone with the cluster, or belong to a job that has ended).
    """
    import ray

    count = len(_KEPT_SCOPES)
    if ray.is_initialized():
        for scope in _KEPT_SCOPES:
            scope.release()
    _KEPT_SCOPES.clear()
    return count
