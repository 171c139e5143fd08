"""Choosing ports for the head node, probing a port, and telling a stopped head from a lost network.

Ports are chosen by the OS (bind to port 0) and held open together until all are
chosen, so they are distinct; no host-wide lock files, no fixed ranges that two
clusters on one host could both pick from.  Worker nodes need no planning at all:
they start with every port set to 0.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from enum import Enum
from typing import List, Sequence


def free_ports(count: int, host: str = "") -> List[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def free_port_in_range(low: int, high: int, host: str = "", exclude: Sequence[int] = ()) -> int:
    """A port in ``[low, high)`` free on ``host`` a moment ago (for a proxy that forwards only that range)."""
    for port in random.sample(range(low, high), high - low):
        if port in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in [{low}, {high}) on {host or 'any address'}")


def port_state(host: str, port: int, timeout: float = 0.5) -> str:
    """``"open"``, ``"refused"`` (nothing listens: the process is gone) or ``"silent"`` (no answer in time).

    The difference matters to a watcher: a refused connection is proof, while silence may
    only mean a busy host whose listener is slow to accept.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "silent"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    return port_state(host, port, timeout) == "open"


class HeadVerdict(str, Enum):
    """What a series of probes of the Ray head's port says about the head."""

    UP = "up"  # it answers
    WAITING = "waiting"  # silent (or refused once) for less than the watch's patience: keep watching
    GONE = "gone"  # refused twice in a row: its host is up and nothing listens any more
    UNREACHABLE = "unreachable"  # silent past the watch's patience: the network to it stays down


class HeadWatch:
    """The one rule, for every watcher of a Ray head's port (a worker node's supervisor, a Spark
    task deciding whether to start its node again): a refused connection is proof, so two in a
    row (one may be a reset as a link returns) mean the head is gone; silence is a lost network,
    ridden out for ``patience_s`` since the head last answered. Pure: states and times are passed in.
    """

    #: Refusals in a row that prove the head gone.
    REFUSALS = 2

    def __init__(self, patience_s: float, now: float):
        self.patience_s = patience_s
        self.last_open = now
        self._refusals = 0

    def observe(self, state: str, now: float) -> HeadVerdict:
        """The verdict after one probe (:func:`port_state`'s ``"open"``, ``"refused"`` or ``"silent"``) at ``now``."""
        if state == "open":
            self.last_open, self._refusals = now, 0
            return HeadVerdict.UP
        self._refusals = self._refusals + 1 if state == "refused" else 0
        if self._refusals >= self.REFUSALS:
            return HeadVerdict.GONE
        if now - self.last_open > self.patience_s:
            return HeadVerdict.UNREACHABLE
        return HeadVerdict.WAITING

    def silent_for(self, now: float) -> float:
        """Seconds since the head last answered."""
        return now - self.last_open
