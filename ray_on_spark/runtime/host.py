"""Facts of the host this process runs on, as a Spark task or the driver sees them.

Read on every executor (a barrier task describes its host to the others), so: standard
library and psutil only.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Callable, Mapping, Optional

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


# ------------------------------------------------------------------ overrides, as in Ray
#: Set on the executors (``spark.executorEnv.<NAME>``): what a Spark worker host has, when
#: detection gets it wrong (a container's view, virtual cores, GPUs kept for something else).
WORKER_CPU_CORES_ENV = "RAY_ON_SPARK_WORKER_CPU_CORES"
WORKER_GPU_NUM_ENV = "RAY_ON_SPARK_WORKER_GPU_NUM"
WORKER_PHYSICAL_MEMORY_ENV = "RAY_ON_SPARK_WORKER_PHYSICAL_MEMORY_BYTES"
WORKER_SHARED_MEMORY_ENV = "RAY_ON_SPARK_WORKER_SHARED_MEMORY_BYTES"
#: Set on the driver: what the driver's host has.
DRIVER_PHYSICAL_MEMORY_ENV = "RAY_ON_SPARK_DRIVER_PHYSICAL_MEMORY_BYTES"
DRIVER_SHARED_MEMORY_ENV = "RAY_ON_SPARK_DRIVER_SHARED_MEMORY_BYTES"
#: Ray's own switch: the object store may be larger than /dev/shm (Ray then backs it with files).
ALLOW_SLOW_STORAGE_ENV = "RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE"


def env_count(name: str, environ: Optional[Mapping[str, str]] = None, minimum: int = 0,
              example: str = "8") -> Optional[int]:
    """The whole number in the environment variable ``name`` (unset or empty: None); a ValueError naming it otherwise."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{name}={raw!r} must be a whole number >= {minimum}, e.g. {name}={example}; "
                         "unset it to let ray_on_spark detect the value.")
    return value


def env_bytes(name: str, environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """A byte count from the environment variable ``name`` (as Ray reads it: a plain integer)."""
    return env_count(name, environ, minimum=1, example="17179869184 (16 GiB)")


def _bytes_or_detected(name: str, detect: Callable[[], int], environ: Optional[Mapping[str, str]]) -> int:
    override = env_bytes(name, environ)
    return override if override is not None else detect()


def worker_host_memory_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """This Spark worker host's memory: ``RAY_ON_SPARK_WORKER_PHYSICAL_MEMORY_BYTES`` or detected."""
    return _bytes_or_detected(WORKER_PHYSICAL_MEMORY_ENV, host_memory_bytes, environ)


def worker_shm_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """This Spark worker host's /dev/shm: ``RAY_ON_SPARK_WORKER_SHARED_MEMORY_BYTES`` or detected."""
    return _bytes_or_detected(WORKER_SHARED_MEMORY_ENV, shm_bytes, environ)


def driver_host_memory_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """The driver host's memory: ``RAY_ON_SPARK_DRIVER_PHYSICAL_MEMORY_BYTES`` or detected."""
    return _bytes_or_detected(DRIVER_PHYSICAL_MEMORY_ENV, host_memory_bytes, environ)


def driver_shm_bytes(environ: Optional[Mapping[str, str]] = None) -> int:
    """The driver host's /dev/shm: ``RAY_ON_SPARK_DRIVER_SHARED_MEMORY_BYTES`` or detected."""
    return _bytes_or_detected(DRIVER_SHARED_MEMORY_ENV, shm_bytes, environ)


def slow_storage_allowed(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE`` is set (to anything non-empty, as Ray tests it)."""
    return bool((os.environ if environ is None else environ).get(ALLOW_SLOW_STORAGE_ENV))
