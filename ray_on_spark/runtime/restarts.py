"""How often something that keeps failing is started again: a cap per sliding window, then give up.

One policy for every restart loop of the library: a Ray worker node restarted in its Spark
task, a lost barrier job resubmitted (Ray on Spark), a lost executor replaced (Spark on Ray).
Without a cap a broken setup restarts forever and hides its error; with a plain counter an
hours-long cluster would give up after a few unrelated losses. Pure: times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence


@dataclass(frozen=True)
class RestartPolicy:
    """At most ``max_failures`` failures within any ``window_s`` seconds are restarted."""

    max_failures: int
    window_s: float

    def recent(self, failure_times: Sequence[float], now: float) -> List[float]:
        """The failures still inside the window at ``now``."""
        return [t for t in failure_times if now - t < self.window_s]

    def allows(self, failure_times: Sequence[float], now: float) -> bool:
        """Whether one more failure at ``now`` stays within the policy (``failure_times``: earlier ones)."""
        return len(self.recent(failure_times, now)) + 1 <= self.max_failures
