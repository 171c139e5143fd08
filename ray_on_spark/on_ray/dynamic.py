"""Dynamic allocation in Spark on Ray: Spark decides how many executors, Ray actors provide them.

With ``spark.dynamicAllocation.enabled=true`` Spark's own ``ExecutorAllocationManager`` runs
in the driver as on any cluster manager: it raises its executor target while tasks wait
(``schedulerBacklogTimeout``), and asks to kill executors idle for ``executorIdleTimeout``
-- never one that holds shuffle data a live job may read, with shuffle tracking, which the
plan turns on (:mod:`ray_on_spark.on_ray.plan`).  What a cluster manager would be told,
:class:`DynamicExecutors` reads from the driver every ``POLL_S``: the target
(:func:`ray_on_spark.spark_env.executor_allocation_target`) and the executors being removed
(:func:`ray_on_spark.spark_env.executors_being_removed`), and acts on Ray:

* target above the executors up or starting: new executor actors, without a placement group
  (a group would hold the room of executors nobody asked for yet).  While Ray has no room for
  one it stays pending -- no error; an autoscaler may add a node -- and the wait is logged;
* target below: the newest still-pending actors are given up (as YARN cancels pending
  container requests; running executors are Spark's to pick);
* an executor Spark removes: its actor stops its JVM and is killed, so its CPUs and memory
  return to Ray;
* an executor lost otherwise (its actor or JVM died) is just gone: Spark's target still counts
  it, so a new actor follows on the next poll.  Such losses and failed starts count against
  ``spark.executor.maxNumFailures`` per window, as the fixed-size keeper's do
  (:mod:`ray_on_spark.on_ray.replacement`); past it no more actors start and
  :attr:`DynamicExecutors.failure` says why.

Why a loop of its own rather than the keeper's: the keeper holds a fixed list of placement-group
slots; here the number moves and no slot exists.  The decision itself is :func:`decide`, pure.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ray_on_spark import _ray, spark_env
from ray_on_spark.errors import ExecutorsLostError
from ray_on_spark.on_ray.plan import FAILURES_WINDOW_CONF, MAX_FAILURES_CONF
from ray_on_spark.on_ray.replacement import why_executor_ended
from ray_on_spark.runtime.restarts import RestartPolicy

if TYPE_CHECKING:  # pragma: no cover
    from pyspark import SparkContext
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

#: How often the driver's allocation target and removals are read.
POLL_S = 0.25
#: When a pending executor's wait for room in Ray is first logged, and how often again.
PENDING_LOG_FIRST_S = 3.0
PENDING_LOG_EVERY_S = 10.0


@dataclass(frozen=True)
class Moves:
    """What to do on Ray after one look at Spark's allocation state."""

    launch: int = 0
    cancel: Tuple[int, ...] = ()  # pending executors (not yet started) to give up
    remove: Tuple[int, ...] = ()  # running executors Spark is removing: stop their actors


def decide(target: int, pending: Sequence[int], running: Sequence[int], removing: Set[int],
           registered: Set[int] = frozenset(), room: Optional[int] = None) -> Moves:
    """Executors to start, give up and stop so that up + starting executors meet Spark's ``target``.

    ``running``: executors up and not being stopped; ``removing``: executor ids the driver no
    longer counts as active; ``registered``: ids the driver knows (a pending one may have
    registered since the last look: it is never given up, Spark may be running tasks on it);
    ``room``: how many executors the Ray cluster could hold beside the running ones (None: no
    limit), so that a job with thousands of waiting tasks does not queue thousands of actors --
    at least one waits, which is what an autoscaler needs to see.  Executors Spark removes stop
    whatever the target; pending ones are given up newest first when the target falls below
    what is up and starting.
    """
    remove = tuple(i for i in running if i in removing)
    staying = len(running) - len(remove)
    want = target - staying - len(pending)
    if want >= 0:
        if room is not None:
            want = min(want, max(0, max(1, room - staying) - len(pending)))
        return Moves(launch=want, remove=remove)
    cancellable = [i for i in pending if i not in registered]
    cancel = tuple(sorted(cancellable, reverse=True)[:min(-want, len(cancellable))])
    return Moves(cancel=cancel, remove=remove)


def cluster_room(total: Dict[str, float], bundle: Dict[str, float]) -> int:
    """How many executors of ``bundle`` the Ray cluster's ``total`` resources hold at most."""
    fits = [int(total.get(k, 0.0) // v) for k, v in bundle.items() if v > 0]
    return min(fits) if fits else 0


def describe(bundle: Dict[str, float]) -> str:
    """One executor's reservation in Ray, for the log: ``CPU=1, memory=600 MiB``."""
    return ", ".join(f"{k}={v / 2**20:.0f} MiB" if k == "memory" else f"{k}={v:g}" for k, v in bundle.items())


@dataclass
class _Executor:
    actor: "ActorHandle"
    ref: Any  # pending: the start call; running: the wait_exit call; stopping: the stop call
    since: float
    host: str = "?"
    logged: float = field(default=0.0)


class DynamicExecutors:
    """Keeps the session's executor actors at Spark's dynamic-allocation target (module doc).

    ``new_actor(executor_id)`` creates an actor and returns ``(actor, start_ref)``;
    ``on_started(info)`` records a started executor's processes; ``bundle`` is what one
    executor's actor reserves in Ray (``{"CPU": 1.0, "memory": ...}``).
    """

    def __init__(self, sc: "SparkContext", policy: RestartPolicy, new_actor: Callable[[int], Tuple[Any, Any]],
                 on_started: Callable[[Dict[str, Any]], None], bundle: Dict[str, float]):
        self._sc = sc
        self._policy = policy
        self._new_actor = new_actor
        self._on_started = on_started
        self._bundle = dict(bundle)
        self._last_error = ""
        self._next_id = 0
        self._pending: Dict[int, _Executor] = {}
        self._running: Dict[int, _Executor] = {}
        self._stopping: Dict[int, _Executor] = {}
        self._failures: List[float] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._connection: Optional[str] = None
        self.failure: Optional[ExecutorsLostError] = None
        #: (``time.monotonic()``, executors up) each time the count changed: for logs and tests.
        self.history: List[Tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="ros-dynamic-executors", daemon=True)

    def start(self) -> None:
        self._connection = _ray.connection_id()
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop acting (before the session stops the actors, so that stopping them is not a loss).

        Actors still waiting for room (or starting) are killed here: a ``stop`` call to an actor
        that Ray has not placed would wait for it.  A half-started executor dies with its actor
        (its supervisor's parent-death signal).
        """
        with self._lock:  # from here on the loop adds no actor (it checks _closed under this lock)
            self._closed.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        with self._lock:
            pending, self._pending = list(self._pending.values()), {}
        if pending and self._connected():
            import ray

            for e in pending:
                try:
                    ray.kill(e.actor, no_restart=True)
                except Exception as err:
                    logger.debug("killing a pending executor actor: %s", err)

    def actors(self) -> List["ActorHandle"]:
        """The actors whose executors started and were not yet killed: for the session's stop."""
        with self._lock:
            return [e.actor for group in (self._running, self._stopping) for e in group.values()]

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    # ------------------------------------------------------------------ the loop
    def _connected(self) -> bool:
        return self._connection is not None and _ray.connection_id() == self._connection

    def _run(self) -> None:
        while not self._closed.is_set() and self._connected() and not spark_env.context_stopped(self._sc):
            try:
                self._step()
            except Exception as e:  # the SparkContext or Ray going away under us; else worth a warning, once
                if self._closed.is_set():
                    return
                text = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                if text != self._last_error:
                    logger.warning("dynamic allocation: reading Spark's target or acting on Ray failed: %s", text)
                    self._last_error = text
            self._closed.wait(POLL_S)

    def _step(self) -> None:
        import ray

        self._collect_starts()
        self._collect_exits()
        target = spark_env.executor_allocation_target(self._sc) or 0
        removing = {int(i) for i in spark_env.executors_being_removed(self._sc) if i.isdigit()}
        registered = {int(i) for i in spark_env.executor_ids(self._sc) if i.isdigit()}
        with self._lock:
            want_more = target > len(self._pending) + len(self._running)
        room = cluster_room(ray.cluster_resources(), self._bundle) if want_more else None
        with self._lock:
            moves = decide(target, list(self._pending), list(self._running), removing, registered, room)
        for executor_id in moves.remove:
            self._stop(executor_id)
        for executor_id in moves.cancel:
            with self._lock:
                e = self._pending.pop(executor_id)
            ray.kill(e.actor, no_restart=True)
            logger.info("dynamic allocation: executor %d was still waiting for Ray and is no longer wanted "
                        "(Spark's target is %d)", executor_id, target)
        for _ in range(moves.launch):
            if self.failure is not None or self._closed.is_set():
                break
            self._launch(target)
        self._log_waits()

    def _launch(self, target: int) -> None:
        executor_id = self._next_id
        self._next_id += 1
        actor, start_ref = self._new_actor(executor_id)
        with self._lock:
            closed = self._closed.is_set()
            if not closed:
                self._pending[executor_id] = _Executor(actor, start_ref, time.monotonic())
        if closed:  # close() ran meanwhile: this actor is nobody's to stop
            ray_kill(actor)
            return
        logger.info("dynamic allocation: Spark wants %d executor(s); starting executor %d", target, executor_id)

    def _collect_starts(self) -> None:
        import ray

        with self._lock:
            refs = {e.ref: i for i, e in self._pending.items()}
        if not refs:
            return
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            executor_id = refs[ref]
            with self._lock:
                e = self._pending.pop(executor_id)
            try:
                info = ray.get(ref)
            except Exception as err:
                ray.kill(e.actor, no_restart=True)
                self._lost(executor_id, f"it did not start: {str(err).splitlines()[0][:200]}")
                continue
            self._on_started(info)  # its processes are the session's to wait for, in any case
            e.host, e.ref = info.get("host", "?"), e.actor.wait_exit.remote()
            with self._lock:
                closed = self._closed.is_set()
                if not closed:
                    self._running[executor_id] = e
                    self.history.append((time.monotonic(), len(self._running)))
            if closed:
                ray_kill(e.actor)
                continue
            logger.info("dynamic allocation: executor %d is up on %s after %.1fs", executor_id, e.host,
                        time.monotonic() - e.since)

    def _collect_exits(self) -> None:
        import ray

        with self._lock:
            watched = {e.ref: ("running", i) for i, e in self._running.items()}
            watched.update({e.ref: ("stopping", i) for i, e in self._stopping.items()})
        if not watched:
            return
        ready, _ = ray.wait(list(watched), num_returns=len(watched), timeout=0)
        for ref in ready:
            state, executor_id = watched[ref]
            with self._lock:
                e = (self._running if state == "running" else self._stopping).pop(executor_id)
                self.history.append((time.monotonic(), len(self._running)))
            try:
                ray.kill(e.actor, no_restart=True)  # stopped: its resources go back to Ray now
            except Exception as err:
                logger.debug("killing executor %d's actor: %s", executor_id, err)
            if state == "stopping":
                logger.info("dynamic allocation: executor %d on %s removed, its Ray resources returned",
                            executor_id, e.host)
            else:
                self._lost(executor_id, why_executor_ended(ref))

    def _stop(self, executor_id: int) -> None:
        with self._lock:
            e = self._running.pop(executor_id)
            e.ref = e.actor.stop.remote()
            self._stopping[executor_id] = e
        logger.info("dynamic allocation: Spark removes executor %d (idle); stopping its actor", executor_id)

    def _lost(self, executor_id: int, reason: str) -> None:
        now = time.monotonic()
        if not self._policy.allows(self._failures, now):
            self.failure = ExecutorsLostError(
                f"Spark executor {executor_id} was lost ({reason}); no more executors are started: "
                f"{len(self._policy.recent(self._failures, now)) + 1} were lost within {self._policy.window_s:.0f}s, "
                f"more than {MAX_FAILURES_CONF}={self._policy.max_failures} allows. Find why they die (executor.log "
                f"in each ros-spark-w* temp dir; OOM: a bigger executor_memory), or allow more: init_spark(..., "
                f"configs={{'{MAX_FAILURES_CONF}': '<n>', '{FAILURES_WINDOW_CONF}': '<e.g. 10min>'}}).")
            logger.error("%s", self.failure)
            return
        self._failures.append(now)
        logger.warning("dynamic allocation: executor %d was lost (%s); Spark's target still counts it, so a new "
                       "one starts", executor_id, reason)

    def _log_waits(self) -> None:
        """Say which executors wait for room in Ray: pending long enough while Ray has no room for
        one more (a placed actor whose JVM is still starting is not waiting for room)."""
        import ray

        now = time.monotonic()
        with self._lock:
            due = [(i, e) for i, e in self._pending.items()
                   if now - e.since >= PENDING_LOG_FIRST_S and now - e.logged >= PENDING_LOG_EVERY_S]
        if not due:
            return
        free = ray.available_resources()
        if cluster_room(free, self._bundle) > 0:
            return
        with self._lock:
            for _, e in due:
                e.logged = now
        logger.info("dynamic allocation: executor(s) %s wait for room in Ray (%s each; free now: CPU=%g, "
                    "memory=%.0f MiB) -- they start when Ray has room", ", ".join(str(i) for i, _ in due),
                    describe(self._bundle), free.get("CPU", 0), free.get("memory", 0) / 2**20)



def ray_kill(actor: "ActorHandle") -> None:
    """Kill an executor actor whatever its state (its executor dies with it); errors only logged."""
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception as e:
        logger.debug("killing an executor actor: %s", e)
