"""Checks the multi-host tests share: what a host has left, its listening sockets, the driver's status.

Why a module: the Ray-on-Spark, Spark-on-Ray and host-loss tests ask the same questions of a host.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import psutil

REPO = str(Path(__file__).resolve().parents[2])
LIBRARY_FILES = ("ros-", "ray")  # what the library and Ray make in /tmp and /dev/shm


def left_in(host) -> Dict[str, List[str]]:
    """What Ray or the library left in a host: processes, and entries in /tmp and /dev/shm."""
    from helpers import RAY_MARKERS

    listing = host.run(["sh", "-c", "ls -A /tmp /dev/shm"], capture_output=True, text=True, timeout=30).stdout.split()
    processes = []
    for pid in host.pids():
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if any(m in cmd for m in RAY_MARKERS):
            processes.append(cmd[:150])
    return {"processes": processes, "files": sorted(n for n in listing if n.startswith(LIBRARY_FILES))}


def assert_nothing_left(hosts, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for h in hosts:
        left = left_in(h)
        while (left["processes"] or left["files"]) and time.monotonic() < deadline:
            time.sleep(0.5)
            left = left_in(h)
        assert not left["processes"] and not left["files"], f"{h.name} after shutdown: {left}"


def listeners(host) -> list:
    done = host.run([sys.executable, "-m", "tests.multihost.listeners"], cwd=REPO, capture_output=True, text=True,
                    timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def wait_status(agent, ok: Callable[[dict], bool], what: str, timeout: float) -> tuple:
    """Poll the driver's status until ``ok(status)``; (seconds it took, the status)."""
    t0 = time.monotonic()
    status = agent.call("status")
    while not ok(status):
        assert time.monotonic() - t0 < timeout, f"no {what} after {timeout:.0f}s: {status}"
        time.sleep(0.5)
        status = agent.call("status")
    return time.monotonic() - t0, status
