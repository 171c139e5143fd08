"""Ray-on-Spark planning is pure: arguments + Spark facts -> a plan, without Spark, Ray, ports or temp dirs."""

from __future__ import annotations

import dataclasses
import os

import pytest

from ray_on_spark.errors import NotEnoughSparkSlotsError
from ray_on_spark.on_spark import arguments, plan
from ray_on_spark.on_spark.resources import DEFAULT_HEAD_HEAP_BYTES, DEFAULT_HEAD_OBJECT_STORE_BYTES
from ray_on_spark.runtime.units import GIB

KNOWN = ["include_log_monitor", "log_style", "include_dashboard", "dashboard_host", "dashboard_port", "resources"]
FACTS = plan.SparkFacts(
    master_kind="standalone", task_cpus=1, task_gpus=0, executor_gpus_configured=False, dynamic_allocation=False,
    driver_gpu_addresses=(), driver_host="10.0.0.1", driver_host_cpus=8, executor_footprint=2 * GIB,
    driver_memory=1 * GIB,
)


def _args(**kwargs) -> arguments.SetupArgs:
    kwargs.setdefault("max_worker_nodes", 2)
    return arguments.check_arguments(known_options=KNOWN, host_memory=64 * GIB, **kwargs)


def _plan(args: arguments.SetupArgs, facts: plan.SparkFacts = FACTS, slots: int = 4) -> plan.ClusterPlan:
    shape = plan.worker_shape(args, facts)
    return plan.plan_cluster(args, facts, shape, plan.SlotFacts(slots=slots, executors=2, default_profile_slots=slots))


def test_a_plan_starts_nothing_and_takes_every_number_from_arguments_and_facts(tmp_path):
    before = set(os.listdir("/tmp"))
    p = _plan(_args(head_node_options={"log_style": "record", "dashboard_port": 8265}))
    assert set(os.listdir("/tmp")) == before  # no temp dir: made when the cluster starts
    assert p.num_worker_nodes == 2 and p.num_cpus_worker_node == 1 and not p.use_task_profile
    assert p.head.host == "10.0.0.1" and p.head.options == {"log_style": "record"}
    assert p.head.with_dashboard and p.head.dashboard_port == 8265 and p.head.dashboard_host == "127.0.0.1"
    assert p.head.memory.heap_bytes == DEFAULT_HEAD_HEAP_BYTES
    assert p.head.memory.object_store_bytes == DEFAULT_HEAD_OBJECT_STORE_BYTES
    # the driver's host also holds the head and the driver
    assert p.driver_host_reserved == p.head.memory.total_bytes + FACTS.driver_memory
    assert not p.autoscaling and p.nodes_at_start == 2


def test_the_worker_plan_is_made_when_the_cluster_has_its_id_port_and_token():
    w = _plan(_args(worker_node_options={"log_style": "record"})).worker_plan("abcd1234", 6380, "tok")
    assert (w.cluster_id, w.head_address, w.auth_token) == ("abcd1234", "10.0.0.1:6380", "tok")
    assert w.worker_options == {"log_style": "record"} and w.executor_footprint == 2 * GIB


def test_max_worker_nodes_max_takes_every_free_slot_and_none_free_is_a_typed_error():
    assert _plan(_args(max_worker_nodes=arguments.MAX_NUM_WORKER_NODES), slots=3).num_worker_nodes == 3
    with pytest.raises(NotEnoughSparkSlotsError):
        _plan(_args(max_worker_nodes=arguments.MAX_NUM_WORKER_NODES), slots=0)


def test_more_nodes_than_slots_is_refused_naming_what_fits():
    with pytest.raises(ValueError, match=r"max_worker_nodes=5 but the Spark application can run only 4 task"):
        _plan(_args(max_worker_nodes=5), slots=4)


def test_autoscaling_starts_the_minimum():
    p = _plan(_args(max_worker_nodes=3, min_worker_nodes=1, autoscale_idle_timeout_minutes=0.5))
    assert p.autoscaling and p.nodes_at_start == 1 and p.idle_timeout_minutes == 0.5


def test_a_bigger_node_than_the_task_needs_a_profile_and_local_mode_cannot_give_one():
    args = _args(num_cpus_worker_node=2)
    assert plan.worker_shape(args, FACTS) == plan.WorkerShape(2, 0, True)
    with pytest.raises(ValueError, match=r"local mode has no stage-level scheduling"):
        plan.worker_shape(args, dataclasses.replace(FACTS, master_kind="local"))
    with pytest.raises(ValueError, match=r"spark.dynamicAllocation.enabled=false"):
        plan.worker_shape(args, dataclasses.replace(FACTS, dynamic_allocation=True))


def test_gpus_without_executor_gpus_are_refused():
    with pytest.raises(ValueError, match=r"num_gpus_worker_node=1 but the Spark executors have no GPUs"):
        plan.worker_shape(_args(num_gpus_worker_node=1), FACTS)


def test_global_mode_gives_the_head_the_hosts_cpus_and_the_drivers_gpus():
    facts = dataclasses.replace(FACTS, driver_gpu_addresses=("0", "1"))
    p = _plan(_args(is_global=True), facts)
    assert p.head.num_cpus == 8 and p.head.gpu_addresses == ("0", "1")
    with pytest.raises(ValueError, match="num_gpus_head_node"):
        _plan(_args(num_gpus_head_node=3), facts)


def test_local_mode_counts_the_driver_as_the_executor():
    p = _plan(_args(), dataclasses.replace(FACTS, master_kind="local"))
    assert p.executor_footprint == FACTS.driver_memory
    assert p.driver_host_reserved == p.head.memory.total_bytes


def test_registration_wait_is_what_is_left_of_sparks_window():
    assert plan.registration_wait(30.0, 12.0) == 18.0
    assert plan.registration_wait(30.0, 45.0) == 0.0


# ---------------------------------------------------------------- defaults as Ray's
def test_unset_node_size_is_a_whole_executor_through_a_task_profile_as_in_ray():
    """16-core executors: a migrated setup_ray_cluster(max_worker_nodes=2) gets 2 x 16 CPUs, not 2 x 1."""
    facts = dataclasses.replace(FACTS, executor_cores=16, executor_gpus=2, executor_gpus_configured=True)
    p = _plan(_args(), facts, slots=2)
    assert (p.num_cpus_worker_node, p.num_gpus_worker_node, p.use_task_profile) == (16, 2, True)
    # executors smaller than the host are no problem: the node is the executor, whatever the host has
    small = dataclasses.replace(FACTS, executor_cores=2)
    assert _plan(_args(), small).num_cpus_worker_node == 2


def test_worker_size_variables_override_the_executor_and_arguments_override_both():
    facts = dataclasses.replace(FACTS, executor_cores=16, worker_cpus_override=4, worker_gpus_override=0)
    assert (_plan(_args(), facts).num_cpus_worker_node, _plan(_args(), facts).num_gpus_worker_node) == (4, 0)
    assert _plan(_args(num_cpus_worker_node=8), facts).num_cpus_worker_node == 8


@pytest.mark.parametrize("change", [dict(master_kind="local"), dict(dynamic_allocation=True)])
def test_without_stage_level_scheduling_a_node_stays_one_task(change):
    facts = dataclasses.replace(FACTS, executor_cores=16, worker_cpus_override=4, **change)
    p = _plan(_args(), facts)
    assert (p.num_cpus_worker_node, p.use_task_profile) == (FACTS.task_cpus, False)


def test_head_gpus_without_driver_addresses_are_a_count_as_in_ray():
    p = _plan(_args(num_gpus_head_node=2))  # FACTS: no spark.driver.resource.gpu addresses (e.g. local[2])
    assert (p.head.num_gpus, p.head.gpu_addresses) == (2, ())
    with_addresses = dataclasses.replace(FACTS, driver_gpu_addresses=("7",))
    with pytest.raises(ValueError, match="num_gpus_head_node=2 but Spark assigned the driver 1 GPU"):
        _plan(_args(num_gpus_head_node=2), with_addresses)
    assert _plan(_args(num_gpus_head_node=1), with_addresses).head.gpu_addresses == ("7",)


def test_ray_starts_option_names_are_read_only_when_node_options_need_checking():
    asked = []

    def names():
        asked.append(1)
        return KNOWN

    arguments.check_arguments(known_options=names, host_memory=64 * GIB, max_worker_nodes=2)
    assert asked == []  # no options: Ray's CLI is not imported for nothing
    with pytest.raises(ValueError, match="'log_stile', which is not a `ray start` option"):
        arguments.check_arguments(known_options=names, host_memory=64 * GIB, max_worker_nodes=2,
                                  worker_node_options={"log_stile": "record"})
    assert asked == [1]


def test_job_slices_label_their_nodes_with_the_next_partitions():
    from ray_on_spark.on_spark.plan import JobSlice

    first = JobSlice(first=0, size=2)
    heal = JobSlice(first=2, size=1, shape=(GIB, GIB))
    assert list(first.partitions()) == [0, 1] and first.describe() == "0-1" and not first.healing
    assert list(heal.partitions()) == [2] and heal.describe() == "2" and heal.healing
