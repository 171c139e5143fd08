"""How long ``to_spark``'s blocks are kept: while Spark's JVM still has a plan that reads them.

A DataFrame from ``to_spark`` is lazy: every action fetches the blocks again, so the holder
must keep them while that DataFrame -- or any DataFrame derived from it, cached, or registered
as a view -- can still run. Python cannot tell (a derived DataFrame keeps no reference to the
Python object it came from); Spark's JVM can: every plan holds the Python function that fetches
the blocks, and with it that function's broadcast variables. So ``to_spark`` gives its function
a tiny broadcast (the conversion's id, which the tasks read) and this module keeps a
``java.lang.ref.WeakReference`` to it. Once no plan refers to the broadcast and the JVM has
collected it, the reference is empty and the conversion's blocks are released (Spark's own
ContextCleaner removes the broadcast itself).

Without this the holder kept every ``to_spark``'s blocks until the session or cluster stopped:
the soak benchmark's object store grew by each minute's conversion, for ever.

The JVM must have collected the broadcast for the reference to empty, and an idle driver JVM
may not collect for a long time. So a sweeper thread looks every :data:`SWEEP_S` seconds while
conversions are tracked, and first asks the JVM to collect (``System.gc()``, as Spark's own
ContextCleaner does every 30 minutes for its broadcasts and shuffles):

* when a DataFrame that ``to_spark`` returned was garbage-collected in Python (the usual end of
  a conversion's life: its blocks are freed within a sweep);
* every :data:`COLLECT_EVERY_S` seconds otherwise, for plans derived from such a DataFrame that
  outlived it (Python cannot see those go).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, List, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ray_on_spark.spark_env import BroadcastWatch

logger = logging.getLogger(__name__)

#: Seconds between sweeps while conversions are tracked.
SWEEP_S = 10.0
#: Seconds between the JVM collections a sweep asks for when no to_spark DataFrame was dropped.
COLLECT_EVERY_S = 300.0


@dataclass(eq=False)  # compared by identity: never ask the JVM whether two references are equal
class _Tracked:
    what: str
    key: "BroadcastWatch"  # on the broadcast the DataFrame's plans hold
    release: Callable[[], None]


class LifetimeTracker:
    """Releases each tracked conversion once the JVM no longer refers to its broadcast."""

    def __init__(self, sweep_s: float = SWEEP_S, collect_every_s: float = COLLECT_EVERY_S):
        self.sweep_s = sweep_s
        self.collect_every_s = collect_every_s
        self._last_collect = time.monotonic()
        self._lock = threading.Lock()
        self._tracked: List[_Tracked] = []
        self._wake = threading.Event()
        self._collect = False  # a to_spark DataFrame was dropped in Python: worth a JVM collection
        self._thread: Optional[threading.Thread] = None

    def track(self, dataframe: Any, key: "BroadcastWatch", release: Callable[[], None], what: str) -> None:
        """Keep ``what`` until the JVM no longer refers to ``key`` (the DataFrame's plans hold it),
        then call ``release``."""
        with self._lock:
            self._tracked.append(_Tracked(what, key, release))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ray_on_spark-to_spark-lifetimes",
                                                daemon=True)
                self._thread.start()
        weakref.finalize(dataframe, self._dropped_in_python)

    def tracked(self) -> int:
        with self._lock:
            return len(self._tracked)

    def _dropped_in_python(self) -> None:
        # Runs inside Python's garbage collection: no py4j call here, only a note for the sweeper.
        self._collect = True
        self._wake.set()

    def sweep(self, collect: bool = False) -> int:
        """Release what the JVM no longer refers to; returns how many conversions were released.

        ``collect``: ask the JVM to collect first (also done when a to_spark DataFrame was dropped
        in Python, and every ``collect_every_s`` seconds).
        """
        with self._lock:
            tracked = list(self._tracked)
            due = time.monotonic() - self._last_collect > self.collect_every_s
            collect, self._collect = collect or self._collect or due, False
        if collect and tracked:
            self._last_collect = time.monotonic()
            for collect_garbage in {t.key.jvm_key: t.key.collect_garbage for t in tracked}.values():
                _call(collect_garbage, "asking the JVM to collect")
        gone = [t for t in tracked if _unreferenced(t)]
        for t in gone:
            _call(t.release, f"releasing the blocks of {t.what}")
            logger.debug("released %s: no Spark plan refers to it any more", t.what)
        with self._lock:
            self._tracked = [t for t in self._tracked if t not in gone]
        return len(gone)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.sweep_s)
            self._wake.clear()
            self.sweep()
            with self._lock:
                if not self._tracked:
                    self._thread = None
                    return


def _unreferenced(t: _Tracked) -> bool:
    """Whether the JVM dropped the broadcast; a JVM that no longer answers runs no plan either."""
    try:
        return not t.key.still_referenced()
    except Exception as e:  # the SparkContext's JVM is gone: nothing can read the blocks any more
        logger.debug("%s: the JVM did not answer (%s); releasing", t.what, e)
        return True


def _call(fn: Callable[[], Any], what: str) -> None:
    try:
        fn()
    except Exception as e:  # a stopped Ray or a killed holder: the blocks are gone with it
        logger.debug("%s failed: %s", what, e)


#: The process's one tracker (to_spark's DataFrames of every session and cluster).
TRACKER = LifetimeTracker()
