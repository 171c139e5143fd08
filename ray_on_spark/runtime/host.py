"""Facts of the host this process runs on, as a Spark task or the driver sees them.

Read on every executor (a barrier task describes its host to the others), so: standard
library and psutil only.
"""

from __future__ import annotations

import os
import shutil
import socket

import psutil


def host_ip_towards(host: str) -> str:
    """The local IP this machine uses to reach ``host`` (what Ray calls the node IP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect((host, 1))
        return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        s.close()


def host_memory_bytes() -> int:
    """Physical memory of this host, or the cgroup's limit when that is lower."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
            if raw.isdigit():
                total = min(total, int(raw))
        except OSError:
            pass
    return total


def shm_bytes() -> int:
    """Free bytes in /dev/shm, where Ray's object store lives (the host's memory if there is none)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return host_memory_bytes()


def executor_key() -> str:
    """Identify the Spark executor (JVM) this Python worker belongs to: its nearest java ancestor."""
    p = psutil.Process()
    try:
        for parent in p.parents():
            if "java" in parent.name():
                return f"{parent.pid}:{int(parent.create_time())}"
    except psutil.Error:
        pass
    return f"ppid-{os.getppid()}"
