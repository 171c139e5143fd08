"""CPU seconds per kind of process while something runs: where a start-up's host CPU goes.

``/proc/<pid>/stat`` of every process is sampled every ``interval`` seconds from ``start()``
to ``stop()``; a process's share is its last sample minus what it had used at ``start()``
(0 for one born meanwhile). A process that lives less than one interval is missed, and the
sampling costs a few percent of one core itself (reported as "sampler": the benchmark's
own process, which is also the driver). Kinds come from command lines (see ``KINDS``).
"""

from __future__ import annotations

import os
import threading
from typing import Dict, List, Optional, Tuple

_TICK = os.sysconf("SC_CLK_TCK")

#: (kind, any of these in the command line); first match wins.
KINDS: List[Tuple[str, Tuple[str, ...]]] = [
    ("spark driver JVM", ("org.apache.spark.deploy.SparkSubmit",)),
    ("spark executor JVMs", ("CoarseGrainedExecutorBackend",)),
    ("spark master/worker JVMs", ("org.apache.spark.deploy.master", "org.apache.spark.deploy.worker")),
    ("pyspark python workers", ("pyspark.daemon", "pyspark/daemon.py", "pyspark.worker", "pyspark/worker.py")),
    ("our supervisors", ("ray_on_spark.runtime.supervisor",)),
    ("worker `ray start` (join_head)", ("ray_on_spark.on_spark.join_head",)),
    ("`ray start` CLI", ("ray.scripts.scripts", "bin/ray start")),
    ("gcs_server", ("gcs_server",)),
    ("raylets", ("raylet/raylet",)),
    ("dashboard (head)", ("dashboard/dashboard.py", "ray-dashboard")),
    ("dashboard agents", ("dashboard/agent.py", "DashboardAgent")),
    ("runtime-env agents", ("runtime_env/agent", "RuntimeEnvAgent")),
    ("log monitors", ("log_monitor.py",)),
    ("autoscaler monitor", ("autoscaler/_private/monitor.py",)),
    ("ray workers", ("default_worker.py", "ray::")),
]


def kind_of(cmdline: str, pid: int, me: int) -> str:
    if pid == me:
        return "sampler (this driver process)"
    for kind, needles in KINDS:
        if any(n in cmdline for n in needles):
            return kind
    return "other"


def _stat(pid: str) -> Optional[Tuple[int, int]]:
    """(start time in ticks, CPU ticks used) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19]), int(fields[11]) + int(fields[12])  # starttime, utime + stime


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuAccount:
    """Sample every process's CPU time in a thread; ``stop()`` returns CPU seconds per kind."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self._base: Dict[Tuple[str, int], int] = {}
        self._last: Dict[Tuple[str, int], int] = {}
        self._cmd: Dict[Tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self, into: Dict[Tuple[str, int], int]) -> None:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            st = _stat(pid)
            if st is None:
                continue
            key = (pid, st[0])
            into[key] = st[1]
            if key not in self._cmd or not self._cmd[key]:
                self._cmd[key] = _cmdline(pid)

    def start(self) -> "CpuAccount":
        self._sample(self._base)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(self._last)

    def stop(self) -> Dict[str, float]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._sample(self._last)
        for key in list(self._last):  # a process's final name (Ray's workers retitle themselves)
            name = _cmdline(key[0])
            if name:
                self._cmd[key] = name
        me = os.getpid()
        out: Dict[str, float] = {}
        for key, ticks in self._last.items():
            used = (ticks - self._base.get(key, 0)) / _TICK
            if used > 0:
                kind = kind_of(self._cmd.get(key, ""), int(key[0]), me)
                out[kind] = out.get(kind, 0.0) + used
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

