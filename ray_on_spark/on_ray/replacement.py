"""Lost executors are replaced: a Spark-on-Ray session keeps ``num_executors`` executors.

An executor is lost when its actor dies (``ray.kill``, its node or raylet gone, an OOM kill)
or its JVM exits on its own.  Spark then sees a lost executor and reruns that executor's
tasks elsewhere (task retries); without more, the session would go on with one executor
fewer for good -- RayDP users hit this with executors lost to OOM or spot preemption.

The :class:`ExecutorKeeper` thread watches every executor actor through a call that returns
when the actor's executor ends (``ExecutorActor.wait_exit``; it fails if the actor dies).
When one returns, the keeper kills what is left of that actor and starts a new actor on the
same placement-group bundle -- if the bundle's node is gone, Ray places the bundle again
wherever it has room, and the new actor waits for it -- whose executor (a new executor id,
as Spark requires) registers with the driver.  The next job runs on ``num_executors``
executors again.

How many replacements: Spark's ``spark.executor.maxNumFailures`` within
``spark.executor.failuresValidityInterval`` (:func:`ray_on_spark.on_ray.plan.restart_policy`).
Beyond that the keeper stops replacing, logs an error saying why and what to change, and
:attr:`ExecutorKeeper.failure` holds it (``SparkOnRay.executor_failure``); the session goes on
with the executors it has.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ray_on_spark import _ray
from ray_on_spark.errors import ExecutorsLostError
from ray_on_spark.on_ray.plan import FAILURES_WINDOW_CONF, MAX_FAILURES_CONF
from ray_on_spark.runtime.restarts import RestartPolicy

if TYPE_CHECKING:  # pragma: no cover
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)


@dataclass
class Replacement:
    """One lost executor and the one that took its place."""

    lost_executor: int
    new_executor: int
    reason: str
    seconds: float  # from the loss being seen to the new executor registered with the driver
    host: str


class ExecutorKeeper:
    """Watches a session's executor actors and replaces the ones that are lost (module doc).

    ``slots`` are the session's actor list, shared: the keeper puts a replacement at its
    predecessor's index.  ``new_actor(bundle_index, executor_id)`` creates an actor and
    returns ``(actor, start_ref)``; ``on_started(info)`` records the new executor's processes.
    """

    def __init__(self, slots: List["ActorHandle"], bundles: List[int], first_new_id: int, policy: RestartPolicy,
                 new_actor: Callable[[int, int], Any], on_started: Callable[[Dict[str, Any]], None],
                 start_timeout: float):
        self._slots = slots
        self._bundles = bundles
        self._next_id = first_new_id
        self._policy = policy
        self._new_actor = new_actor
        self._on_started = on_started
        self._start_timeout = start_timeout
        self._ids = list(range(len(slots)))  # executor id per slot
        self._failures: List[float] = []
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.replacements: List[Replacement] = []
        self.failure: Optional[ExecutorsLostError] = None
        self._thread = threading.Thread(target=self._run, name="ros-executor-keeper", daemon=True)
        self._connection: Optional[str] = None

    def start(self) -> None:
        self._connection = _ray.connection_id()
        self._thread.start()

    def _connected(self) -> bool:
        # Ray's wait and actor calls would start a new local Ray once the user's ray.shutdown() ran
        return self._connection is not None and _ray.connection_id() == self._connection

    def close(self, timeout: float = 5.0) -> None:
        """Stop watching (before the session stops its actors, so that stopping is not a loss)."""
        self._closed.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the watch loop
    def _run(self) -> None:
        import ray

        watches = {self._slots[i].wait_exit.remote(): i for i in range(len(self._slots))}
        while not self._closed.is_set() and self._connected():
            try:
                ready, _ = ray.wait(list(watches), num_returns=1, timeout=0.5)
            except Exception as e:  # Ray shut down under us: nothing left to keep
                logger.debug("executor keeper stops: %s", e)
                return
            for ref in ready:
                slot = watches.pop(ref)
                if self._closed.is_set():
                    return
                reason = why_executor_ended(ref)
                new_ref = self._replace(slot, reason)
                if new_ref is not None:
                    watches[new_ref] = slot

    def _replace(self, slot: int, reason: str) -> Optional[Any]:
        """Replace the executor in ``slot``; the new actor's watch, or None when it was not replaced."""
        import ray

        lost_id, seen = self._ids[slot], time.monotonic()
        if not self._policy.allows(self._failures, seen):
            self._give_up(lost_id, reason)
            return None
        self._failures.append(seen)
        try:
            ray.kill(self._slots[slot], no_restart=True)  # what is left of it (a live actor whose JVM died)
        except Exception as e:
            logger.debug("killing lost executor %d's actor: %s", lost_id, e)
        while not self._closed.is_set() and self._connected():
            new_id = self._next_id
            self._next_id += 1
            actor, start_ref = self._new_actor(self._bundles[slot], new_id)
            try:
                info = ray.get(start_ref, timeout=self._start_timeout + 10)
            except Exception as e:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
                if self._closed.is_set():
                    return None
                if not self._policy.allows(self._failures, time.monotonic()):
                    self._give_up(lost_id, f"{reason}; its replacement did not start either: {e}")
                    return None
                self._failures.append(time.monotonic())
                logger.warning("executor %d's replacement (executor %d) did not start: %s; trying again",
                               lost_id, new_id, e)
                continue
            with self._lock:
                if self._closed.is_set():  # the session is stopping: this actor is not in its list
                    ray.kill(actor, no_restart=True)
                    return None
                self._slots[slot] = actor
                self._ids[slot] = new_id
            self._on_started(info)
            took = time.monotonic() - seen
            self.replacements.append(Replacement(lost_id, new_id, reason, took, info.get("host", "?")))
            logger.info("Spark executor %d was lost (%s); executor %d replaced it on %s in %.1fs",
                        lost_id, reason, new_id, info.get("host", "?"), took)
            return actor.wait_exit.remote()
        return None

    def _give_up(self, lost_id: int, reason: str) -> None:
        self.failure = ExecutorsLostError(
            f"Spark executor {lost_id} was lost ({reason}) and is not replaced: {len(self._failures)} executor(s) "
            f"were lost within {self._policy.window_s:.0f}s, and {MAX_FAILURES_CONF}={self._policy.max_failures} "
            f"allows no more. The session goes on with the executors it has. Find why they die (each "
            f"executor's log is executor.log in its ros-spark-w* temp dir; OOM: a bigger executor_memory), "
            f"or allow more: init_spark(..., configs={{'{MAX_FAILURES_CONF}': '<n>', "
            f"'{FAILURES_WINDOW_CONF}': '<e.g. 10min>'}})."
        )
        logger.error("%s", self.failure)


def why_executor_ended(ref: Any) -> str:
    """What ended an executor, from its actor's ``wait_exit`` call."""
    import ray

    try:
        code = ray.get(ref, timeout=5)
    except ray.exceptions.RayActorError as e:
        return f"its Ray actor died: {str(e).splitlines()[0][:200]}"
    except Exception as e:
        return f"its Ray actor is unreachable: {str(e).splitlines()[0][:200]}"
    return f"its JVM exited with code {code}"
