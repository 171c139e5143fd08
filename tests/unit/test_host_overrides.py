"""What the library detects of a host can be overridden as in Ray (RAY_ON_SPARK_WORKER_* / _DRIVER_*)."""

from __future__ import annotations

import pytest

from ray_on_spark.on_spark.resources import HostView, worker_memory_share
from ray_on_spark.runtime import host
from ray_on_spark.runtime.units import GIB


def test_overrides_replace_what_is_detected_and_unset_means_detected():
    env = {host.WORKER_PHYSICAL_MEMORY_ENV: str(64 * GIB), host.WORKER_SHARED_MEMORY_ENV: str(8 * GIB),
           host.DRIVER_PHYSICAL_MEMORY_ENV: str(32 * GIB), host.DRIVER_SHARED_MEMORY_ENV: " 1024 "}
    assert host.worker_host_memory_bytes(env) == 64 * GIB and host.worker_shm_bytes(env) == 8 * GIB
    assert host.driver_host_memory_bytes(env) == 32 * GIB and host.driver_shm_bytes(env) == 1024
    assert host.worker_host_memory_bytes({}) == host.host_memory_bytes()
    assert host.env_count(host.WORKER_CPU_CORES_ENV, {host.WORKER_CPU_CORES_ENV: ""}) is None


@pytest.mark.parametrize("name", [host.WORKER_PHYSICAL_MEMORY_ENV, host.WORKER_SHARED_MEMORY_ENV,
                                  host.DRIVER_PHYSICAL_MEMORY_ENV, host.DRIVER_SHARED_MEMORY_ENV])
@pytest.mark.parametrize("raw", ["16g", "-1", "0", "1.5e9"])
def test_unparseable_memory_override_is_refused_naming_the_variable(name, raw):
    read = {host.WORKER_PHYSICAL_MEMORY_ENV: host.worker_host_memory_bytes, host.WORKER_SHARED_MEMORY_ENV:
            host.worker_shm_bytes, host.DRIVER_PHYSICAL_MEMORY_ENV: host.driver_host_memory_bytes,
            host.DRIVER_SHARED_MEMORY_ENV: host.driver_shm_bytes}[name]
    with pytest.raises(ValueError, match=f"{name}={raw!r} must be a whole number >= 1"):
        read({name: raw})


def test_cpu_cores_override_must_be_at_least_one_and_gpus_may_be_zero():
    with pytest.raises(ValueError, match="RAY_ON_SPARK_WORKER_CPU_CORES='0' must be a whole number >= 1"):
        host.env_count(host.WORKER_CPU_CORES_ENV, {host.WORKER_CPU_CORES_ENV: "0"}, minimum=1)
    assert host.env_count(host.WORKER_GPU_NUM_ENV, {host.WORKER_GPU_NUM_ENV: "0"}) == 0


def test_slow_storage_lifts_the_dev_shm_cap_as_in_ray():
    view = HostView(total_memory=32 * GIB, shm_bytes=256 * 2**20, num_ray_worker_nodes=1, num_executors=1)
    capped = worker_memory_share(view, 2 * GIB)
    lifted = worker_memory_share(view, 2 * GIB, allow_slow_storage=True)
    assert capped.object_store_bytes <= 256 * 2**20 < lifted.object_store_bytes
    assert lifted.total_bytes == capped.total_bytes  # the node's share of the host is the same either way
    assert host.slow_storage_allowed({host.ALLOW_SLOW_STORAGE_ENV: "1"}) and not host.slow_storage_allowed({})
