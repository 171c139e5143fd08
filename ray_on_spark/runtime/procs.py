"""Process bookkeeping: who we started, and making sure they are gone.

A pid alone is not an identity (pids are reused), so every record carries the
process's create time as psutil reports it.  Only ``psutil`` and the standard library
are imported here (and the runtime's own waiting), because the node supervisor (which runs on every executor) uses
this module and must start fast.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Iterable, List, Optional

import psutil

from ray_on_spark.runtime.waiting import poll_until

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> Optional["ProcessRecord"]:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def process(self) -> Optional[psutil.Process]:
        """The live process this record names, or None if it is gone (or the pid was reused)."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 0.01:
                return None
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.process() is not None


def tree(pid: int) -> List[ProcessRecord]:
    """The process and all its descendants, as records."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in procs:
        try:
            out.append(ProcessRecord(p.pid, p.create_time()))
        except psutil.Error:
            pass
    return out


def alive(records: Iterable[ProcessRecord]) -> List[ProcessRecord]:
    return [r for r in records if r.alive()]


def signal_all(records: Iterable[ProcessRecord], sig: int) -> None:
    for r in records:
        p = r.process()
        if p is not None:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass


def wait_gone(records: Iterable[ProcessRecord], timeout: float, poll: float = 0.05) -> List[ProcessRecord]:
    """Wait until none of ``records`` is alive; return the ones still alive at the deadline."""
    pending = list(records)

    def all_gone() -> bool:
        nonlocal pending
        pending = alive(pending)
        if pending:
            _reap_children()  # we may be their parent (or their subreaper)
        return not pending

    poll_until(all_gone, timeout=timeout, poll=poll)
    return alive(pending)


def terminate(records: Iterable[ProcessRecord], grace: float = 3.0, kill_wait: float = 2.0) -> List[ProcessRecord]:
    """SIGTERM, wait ``grace`` seconds, SIGKILL what is left; return survivors (normally none)."""
    records = list(records)
    signal_all(records, signal.SIGTERM)
    left = wait_gone(records, grace)
    if left:
        logger.debug("SIGKILL %d process(es) that ignored SIGTERM: %s", len(left), [r.pid for r in left])
        signal_all(left, signal.SIGKILL)
        left = wait_gone(left, kill_wait)
    return left


def _reap_children() -> None:
    """Collect exited children so they do not linger as zombies (we may be a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def reap_all(timeout: float) -> None:
    """Reap every exited child (orphans handed to us as subreaper) until none is left."""
    me = psutil.Process()

    def no_children() -> bool:
        _reap_children()
        try:
            return not me.children()
        except psutil.Error:
            return True

    poll_until(no_children, timeout=timeout, poll=0.02)
