"""Unit tests for ray_on_spark.on_spark.resources: pure arithmetic, no Spark, no Ray."""

from __future__ import annotations

import itertools

import pytest

from ray_on_spark.errors import InsufficientResourcesError
from ray_on_spark.on_spark.resources import (
    DEFAULT_HEAD_HEAP_BYTES,
    DEFAULT_HEAD_OBJECT_STORE_BYTES,
    HOST_MEMORY_SAFETY_FRACTION,
    MIN_WORKER_HEAP_BYTES,
    RAY_MIN_OBJECT_STORE_BYTES,
    SPARK_MIN_OVERHEAD_BYTES,
    STRICT_MIN_CPUS,
    STRICT_MIN_HEAP_BYTES,
    HostView,
    MemoryShare,
    check_strict,
    executor_footprint_bytes,
    gpu_addresses_for_node,
    head_memory,
    healing_share,
    hosts_summary,
    worker_memory_share,
)
from ray_on_spark.runtime.units import GIB, KIB, MIB, parse_memory

# --------------------------------------------------------------------------- parse_memory


@pytest.mark.parametrize(
    "value, expected",
    [
        (0, 0),
        (2147483648, 2 * GIB),
        ("1g", GIB),
        ("1G", GIB),
        ("512m", 512 * MIB),
        ("512M", 512 * MIB),
        ("2GB", 2 * GIB),
        ("2gb", 2 * GIB),
        ("1.5GiB", int(1.5 * GIB)),
        ("1.5gib", int(1.5 * GIB)),
        ("64k", 64 * KIB),
        ("1t", 1024 * GIB),
        (" 256 MB ", 256 * MIB),
        ("1234", 1234),
        ("1234b", 1234),
        (1.5, 1),
    ],
)
def test_parse_memory_understands_bytes_and_unit_strings(value, expected):
    assert parse_memory(value) == expected


def test_parse_memory_returns_an_int():
    assert isinstance(parse_memory("1.5g"), int)
    assert isinstance(parse_memory(3.0), int)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1024", 1024 * MIB),  # spark.executor.memory=1024 means 1024 MiB
        ("2g", 2 * GIB),  # an explicit unit wins over the default
        ("512m", 512 * MIB),
        ("100b", 100),  # an explicit byte suffix wins too
        (4, 4 * MIB),
    ],
)
def test_parse_memory_applies_default_unit_only_to_unitless_values(value, expected):
    assert parse_memory(value, default_unit="m") == expected


@pytest.mark.parametrize(
    "value",
    [True, False, -1, -1.0, "abc", None, "", "1x", "-1g", "1.2.3g", float("nan"), float("inf"), [1], {"a": 1}],
)
def test_parse_memory_rejects_non_sizes_naming_the_argument_with_an_example(value):
    with pytest.raises(ValueError) as err:
        parse_memory(value, name="memory_worker_node")
    msg = str(err.value)
    assert "memory_worker_node" in msg
    assert "2g" in msg  # shows an example of a valid value


def test_parse_memory_error_shows_the_bad_value():
    with pytest.raises(ValueError, match="'abc'"):
        parse_memory("abc", name="object_store_memory_head_node")


def test_parse_memory_refuses_bool_even_though_bool_is_an_int():
    with pytest.raises(ValueError, match="True"):
        parse_memory(True, name="memory_head_node")


def test_parse_memory_negative_int_message_says_negative():
    with pytest.raises(ValueError, match="negative"):
        parse_memory(-5, name="memory_head_node")


# --------------------------------------------------------------------------- executor footprint


def test_small_executor_gets_the_384_mib_minimum_overhead():
    assert executor_footprint_bytes(1 * GIB) == 1 * GIB + 384 * MIB
    assert executor_footprint_bytes(0) == SPARK_MIN_OVERHEAD_BYTES


def test_large_executor_gets_ten_percent_overhead():
    heap = 8 * GIB
    assert executor_footprint_bytes(heap) == heap + int(heap * 0.1)
    assert executor_footprint_bytes(heap) > heap + SPARK_MIN_OVERHEAD_BYTES


def test_overhead_switches_from_minimum_to_factor_at_3840_mib():
    boundary = 3840 * MIB  # 10 % of it is exactly 384 MiB
    assert executor_footprint_bytes(boundary) == boundary + 384 * MIB
    assert executor_footprint_bytes(boundary + 10 * MIB) == boundary + 10 * MIB + int((boundary + 10 * MIB) * 0.1)


def test_custom_overhead_factor_is_used():
    assert executor_footprint_bytes(10 * GIB, overhead_factor=0.2) == 12 * GIB


def test_explicit_overhead_replaces_the_computed_one():
    assert executor_footprint_bytes(4 * GIB, overhead=100 * MIB) == 4 * GIB + 100 * MIB
    assert executor_footprint_bytes(4 * GIB, overhead=0) == 4 * GIB


def test_pyspark_memory_is_added_to_the_footprint():
    assert executor_footprint_bytes(1 * GIB, pyspark_memory=512 * MIB) == 1 * GIB + 384 * MIB + 512 * MIB


# --------------------------------------------------------------------------- worker_memory_share


def _host(total=24 * GIB, shm=12 * GIB, nodes=2, executors=2, reserved=0) -> HostView:
    return HostView(total_memory=total, shm_bytes=shm, num_ray_worker_nodes=nodes, num_executors=executors,
                    reserved_bytes=reserved)


FOOTPRINT_2G = executor_footprint_bytes(2 * GIB)  # 2 GiB + 384 MiB


def _per_node(host: HostView, footprint: int) -> int:
    budget = int(host.total_memory * HOST_MEMORY_SAFETY_FRACTION) - host.num_executors * footprint - host.reserved_bytes
    return budget // host.num_ray_worker_nodes


def test_worker_share_splits_the_budget_left_after_executors_between_nodes():
    host = _host()
    share = worker_memory_share(host, FOOTPRINT_2G)
    # 24 GiB * 0.8 = 19.2 GiB; minus 2 x 2.375 GiB = 14.45 GiB; / 2 nodes = 7.225 GiB
    expected_per_node = (int(24 * GIB * 0.8) - 2 * FOOTPRINT_2G) // 2
    assert expected_per_node == _per_node(host, FOOTPRINT_2G)
    assert share.total_bytes == expected_per_node
    assert share.object_store_bytes == int(expected_per_node * 0.3)
    assert share.heap_bytes == expected_per_node - int(expected_per_node * 0.3)


def test_reserved_memory_on_the_host_shrinks_every_nodes_share():
    without = worker_memory_share(_host(), FOOTPRINT_2G)
    with_head = worker_memory_share(_host(reserved=2 * GIB), FOOTPRINT_2G)
    assert without.total_bytes - with_head.total_bytes == GIB  # 2 GiB reserved shared by 2 nodes


def test_object_store_is_capped_by_the_dev_shm_share():
    host = _host(shm=2 * GIB)  # 2 GiB * 0.8 / 2 nodes = 0.8 GiB per node
    share = worker_memory_share(host, FOOTPRINT_2G)
    shm_cap = int(2 * GIB * 0.8) // 2
    assert share.object_store_bytes == shm_cap
    assert share.object_store_bytes < int(_per_node(host, FOOTPRINT_2G) * 0.3)
    # What the object store cannot take goes to the heap; nothing is lost or added.
    assert share.total_bytes == _per_node(host, FOOTPRINT_2G)


def test_object_store_never_goes_below_rays_minimum_even_with_tiny_dev_shm():
    share = worker_memory_share(_host(shm=64 * MIB), FOOTPRINT_2G)
    assert share.object_store_bytes == RAY_MIN_OBJECT_STORE_BYTES
    assert share.total_bytes == _per_node(_host(shm=64 * MIB), FOOTPRINT_2G)


def test_explicit_heap_and_object_store_are_honoured_when_they_fit():
    share = worker_memory_share(_host(), FOOTPRINT_2G, requested_heap=4 * GIB, requested_object_store=2 * GIB)
    assert share == MemoryShare(heap_bytes=4 * GIB, object_store_bytes=2 * GIB)


def test_explicit_heap_alone_keeps_the_default_object_store():
    host = _host()
    share = worker_memory_share(host, FOOTPRINT_2G, requested_heap=3 * GIB)
    assert share.heap_bytes == 3 * GIB
    assert share.object_store_bytes == int(_per_node(host, FOOTPRINT_2G) * 0.3)


def test_explicit_object_store_alone_gives_the_rest_to_the_heap():
    host = _host()
    share = worker_memory_share(host, FOOTPRINT_2G, requested_object_store=1 * GIB)
    assert share.object_store_bytes == 1 * GIB
    assert share.heap_bytes == _per_node(host, FOOTPRINT_2G) - 1 * GIB


def test_too_large_heap_request_is_refused_naming_memory_worker_node_and_a_value_that_fits():
    host = _host()
    with pytest.raises(InsufficientResourcesError) as err:
        worker_memory_share(host, FOOTPRINT_2G, requested_heap=20 * GIB)
    msg = str(err.value)
    assert "memory_worker_node" in msg
    assert str(20 * GIB) in msg
    suggested = int(msg.rsplit("memory_worker_node <= ", 1)[1].rstrip(". "))
    share = worker_memory_share(host, FOOTPRINT_2G, requested_heap=suggested)
    assert share.heap_bytes == suggested
    assert share.total_bytes <= _per_node(host, FOOTPRINT_2G)


def test_too_large_object_store_request_is_refused_naming_the_argument_and_a_value_that_fits():
    host = _host()
    with pytest.raises(InsufficientResourcesError) as err:
        worker_memory_share(host, FOOTPRINT_2G, requested_object_store=10 * GIB)
    msg = str(err.value)
    assert "object_store_memory_worker_node" in msg
    assert "/dev/shm" in msg
    suggested = int(msg.rsplit("<= ", 1)[1].rstrip(".").split()[0])
    share = worker_memory_share(host, FOOTPRINT_2G, requested_object_store=suggested)
    assert share.object_store_bytes == suggested
    assert share.heap_bytes >= MIN_WORKER_HEAP_BYTES


def test_object_store_request_over_the_dev_shm_share_is_refused_even_if_memory_would_suffice():
    host = _host(shm=1 * GIB)  # 0.4 GiB per node
    with pytest.raises(InsufficientResourcesError, match="object_store_memory_worker_node"):
        worker_memory_share(host, FOOTPRINT_2G, requested_object_store=1 * GIB)


def test_object_store_suggestion_accounts_for_the_requested_heap():
    host = _host()
    with pytest.raises(InsufficientResourcesError) as err:
        worker_memory_share(host, FOOTPRINT_2G, requested_heap=4 * GIB, requested_object_store=10 * GIB)
    suggested = int(str(err.value).rsplit("<= ", 1)[1].rstrip(".").split()[0])
    share = worker_memory_share(host, FOOTPRINT_2G, requested_heap=4 * GIB, requested_object_store=suggested)
    assert share == MemoryShare(4 * GIB, suggested)


def test_host_too_small_for_its_executors_is_refused_with_the_arithmetic():
    host = _host(total=8 * GIB, executors=3)  # 6.4 GiB budget - 3 x 2.375 GiB < 0
    with pytest.raises(InsufficientResourcesError) as err:
        worker_memory_share(host, FOOTPRINT_2G)
    msg = str(err.value)
    assert "3 executor(s)" in msg
    assert "fewer Ray worker nodes" in msg


def test_too_many_nodes_per_host_is_refused():
    with pytest.raises(InsufficientResourcesError):
        worker_memory_share(_host(total=4 * GIB, executors=0, nodes=16), FOOTPRINT_2G)


def test_zero_worker_nodes_is_a_value_error():
    with pytest.raises(ValueError, match="num_ray_worker_nodes"):
        worker_memory_share(_host(nodes=0), FOOTPRINT_2G)


def test_insufficient_resources_error_is_a_value_error():
    assert issubclass(InsufficientResourcesError, ValueError)


_GRID_TOTALS = [2 * GIB, 4 * GIB, 8 * GIB, 24 * GIB, 64 * GIB, 256 * GIB]
_GRID_SHM = [64 * MIB, 1 * GIB, 8 * GIB, 128 * GIB]
_GRID_NODES = [1, 2, 3, 8]
_GRID_EXECUTORS = [0, 1, 2, 4]
_GRID_FOOTPRINTS = [executor_footprint_bytes(m) for m in (512 * MIB, 2 * GIB, 7 * GIB)]
_GRID_RESERVED = [0, 2 * GIB]
_GRID_HEAP = [None, 300 * MIB, 2 * GIB, 10 * GIB]
_GRID_STORE = [None, 100 * MIB, 1 * GIB, 6 * GIB]


def test_worker_memory_never_exceeds_host_budget():
    granted = refused = 0
    for total, shm, nodes, executors, footprint, reserved, heap, store in itertools.product(
        _GRID_TOTALS, _GRID_SHM, _GRID_NODES, _GRID_EXECUTORS, _GRID_FOOTPRINTS, _GRID_RESERVED, _GRID_HEAP, _GRID_STORE
    ):
        host = HostView(total, shm, nodes, executors, reserved)
        try:
            share = worker_memory_share(host, footprint, requested_heap=heap, requested_object_store=store)
        except InsufficientResourcesError:
            refused += 1
            continue
        granted += 1
        used = nodes * share.total_bytes + executors * footprint + reserved
        case = (total, shm, nodes, executors, footprint, reserved, heap, store, share)
        assert used <= total * HOST_MEMORY_SAFETY_FRACTION, case
        assert share.object_store_bytes >= RAY_MIN_OBJECT_STORE_BYTES, case
        assert share.heap_bytes > 0, case
        if heap is not None:
            assert share.heap_bytes == heap, case
        if store is not None and store >= RAY_MIN_OBJECT_STORE_BYTES:
            assert share.object_store_bytes == store, case
    # The grid exercises both outcomes substantially.
    assert granted > 1000 and refused > 1000, (granted, refused)


def test_granted_default_worker_heap_is_never_below_the_minimum():
    for per_node_mib in range(331, 400):
        host = HostView(total_memory=int(per_node_mib * MIB / 0.8) + 8, shm_bytes=64 * GIB, num_ray_worker_nodes=1,
                        num_executors=0)
        assert _per_node(host, 0) // MIB == per_node_mib
        share = worker_memory_share(host, 0)
        assert share.heap_bytes >= MIN_WORKER_HEAP_BYTES, (per_node_mib, share)


def test_explicit_object_store_request_leaves_room_for_the_minimum_heap():
    host = _host(shm=64 * GIB)
    per_node = _per_node(host, FOOTPRINT_2G)
    try:
        share = worker_memory_share(host, FOOTPRINT_2G, requested_object_store=per_node)
    except InsufficientResourcesError:
        return  # refusing is correct
    assert share.heap_bytes >= MIN_WORKER_HEAP_BYTES, share


# --------------------------------------------------------------------------- hosts_summary


def _info(host, executor, total=16 * GIB, shm=8 * GIB):
    return {"host": host, "executor": executor, "total_memory": total, "shm_bytes": shm}


def test_hosts_summary_groups_tasks_by_host_and_counts_distinct_executors():
    infos = [
        _info("10.0.0.1", "exec-1"),
        _info("10.0.0.1", "exec-1"),
        _info("10.0.0.1", "exec-2"),
        _info("10.0.0.2", "exec-3", total=32 * GIB, shm=4 * GIB),
    ]
    hosts = hosts_summary(infos, driver_host="10.0.0.9", head_reserved=2 * GIB)
    assert set(hosts) == {"10.0.0.1", "10.0.0.2"}
    assert hosts["10.0.0.1"] == HostView(16 * GIB, 8 * GIB, num_ray_worker_nodes=3, num_executors=2, reserved_bytes=0)
    assert hosts["10.0.0.2"] == HostView(32 * GIB, 4 * GIB, num_ray_worker_nodes=1, num_executors=1, reserved_bytes=0)


def test_hosts_summary_reserves_head_memory_only_on_the_driver_host():
    infos = [_info("driver", "e1"), _info("driver", "e2"), _info("other", "e3")]
    hosts = hosts_summary(infos, driver_host="driver", head_reserved=3 * GIB)
    assert hosts["driver"].reserved_bytes == 3 * GIB
    assert hosts["other"].reserved_bytes == 0
    assert hosts["driver"].num_executors == 2
    assert hosts["driver"].num_ray_worker_nodes == 2


def test_hosts_summary_of_no_tasks_is_empty():
    assert hosts_summary([], driver_host="driver", head_reserved=GIB) == {}


# --------------------------------------------------------------------------- GPUs


def test_gpu_addresses_are_exactly_those_spark_assigned():
    assert gpu_addresses_for_node(["3", "5"], 2) == ("3", "5")
    assert gpu_addresses_for_node([" 0 ", 1], 2) == ("0", "1")


def test_gpu_addresses_take_only_as_many_as_requested():
    assert gpu_addresses_for_node(["0", "1", "2"], 1) == ("0",)
    assert gpu_addresses_for_node(["0", "1"], 0) == ()
    assert gpu_addresses_for_node([], 0) == ()


def test_fewer_gpu_addresses_than_requested_is_an_error_listing_them():
    with pytest.raises(InsufficientResourcesError) as err:
        gpu_addresses_for_node(["7"], 2)
    msg = str(err.value)
    assert "num_gpus_worker_node=2" in msg
    assert "['7']" in msg
    assert "at most 1" in msg


def test_negative_gpu_request_is_an_error():
    with pytest.raises(ValueError, match="num_gpus_worker_node"):
        gpu_addresses_for_node(["0"], -1)


# --------------------------------------------------------------------------- strict mode, head


def test_strict_mode_accepts_recommended_sized_nodes():
    check_strict(STRICT_MIN_CPUS, MemoryShare(STRICT_MIN_HEAP_BYTES, GIB))
    check_strict(16, MemoryShare(64 * GIB, 16 * GIB))


def test_strict_mode_refuses_too_few_cpus():
    with pytest.raises(InsufficientResourcesError) as err:
        check_strict(STRICT_MIN_CPUS - 1, MemoryShare(STRICT_MIN_HEAP_BYTES, GIB))
    msg = str(err.value)
    assert "num_cpus_worker_node" in msg
    assert "strict_mode=False" in msg
    assert "heap" not in msg


def test_strict_mode_refuses_too_little_heap():
    with pytest.raises(InsufficientResourcesError) as err:
        check_strict(8, MemoryShare(STRICT_MIN_HEAP_BYTES - 1, GIB))
    msg = str(err.value)
    assert "heap per node" in msg
    assert "CPU" not in msg


def test_strict_mode_lists_every_problem_at_once():
    with pytest.raises(InsufficientResourcesError) as err:
        check_strict(1, MemoryShare(GIB, GIB))
    msg = str(err.value)
    assert "1 CPU(s)" in msg and "heap per node" in msg


def test_head_memory_defaults_to_one_gib_each():
    assert head_memory(0, None, None) == MemoryShare(DEFAULT_HEAD_HEAP_BYTES, DEFAULT_HEAD_OBJECT_STORE_BYTES)
    assert DEFAULT_HEAD_HEAP_BYTES == GIB and DEFAULT_HEAD_OBJECT_STORE_BYTES == GIB


def test_head_memory_honours_explicit_values():
    assert head_memory(4, 3 * GIB, 2 * GIB) == MemoryShare(3 * GIB, 2 * GIB)
    assert head_memory(4, 3 * GIB, None) == MemoryShare(3 * GIB, GIB)


def test_head_object_store_is_raised_to_rays_minimum():
    assert head_memory(0, None, 10 * MIB).object_store_bytes == RAY_MIN_OBJECT_STORE_BYTES


def _task_on(host: str, executor: str) -> dict:
    return {"host": host, "total_memory": 24 * GIB, "shm_bytes": 8 * GIB, "executor": executor}


def test_a_healing_job_splits_only_what_the_running_nodes_left_on_each_host():
    """After a lost host, a new job's node may share a host with a node that kept running: it
    gets the rest of the host, so together they never exceed it."""
    running = worker_memory_share(hosts_summary([_task_on("h1", "e1"), _task_on("h1", "e1")], "h0", 0)["h1"], FOOTPRINT_2G)
    held = {"h1": (running.total_bytes, running.object_store_bytes)}
    views = hosts_summary([_task_on("h1", "e1"), _task_on("h2", "e2")], "h0", 0, held_by_host=held)
    assert views["h1"].reserved_bytes == running.total_bytes
    assert views["h1"].shm_bytes == 8 * GIB  # free space: the running node's pages are not in it
    assert views["h2"].reserved_bytes == 0 and views["h2"].shm_bytes == 8 * GIB
    newcomer = worker_memory_share(views["h1"], FOOTPRINT_2G)
    budget = int(24 * GIB * HOST_MEMORY_SAFETY_FRACTION) - FOOTPRINT_2G
    assert running.total_bytes + newcomer.total_bytes <= budget


def test_a_healing_node_never_gets_more_than_the_setups_nodes_got():
    """A node placed alone on a host while the cluster heals partially must leave room for the
    node that joins it when the lost slots return."""
    alone = MemoryShare(heap_bytes=10 * GIB, object_store_bytes=4 * GIB)
    assert healing_share(alone, (3 * GIB, GIB)) == MemoryShare(heap_bytes=3 * GIB, object_store_bytes=GIB)
    small = MemoryShare(heap_bytes=GIB, object_store_bytes=512 * MIB)
    assert healing_share(small, (3 * GIB, GIB)) == small  # a fuller host gives less: less it is
