"""Choosing ports for the head node.

Ports are chosen by the OS (bind to port 0) and held open together until all are
chosen, so they are distinct; no host-wide lock files, no fixed ranges that two
clusters on one host could both pick from.  Worker nodes need no planning at all:
they start with every port set to 0.
"""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
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
