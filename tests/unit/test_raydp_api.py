"""RayDP 1.6's public API, as its users call it: init_spark's arguments in order, from_spark's block count."""

from __future__ import annotations

import inspect

import pytest

import ray_on_spark
from ray_on_spark.data.api import num_blocks_wanted

#: raydp.init_spark in RayDP 1.6.5 (python/raydp/context.py), name and default, in order.
RAYDP_INIT_SPARK = [
    ("app_name", inspect.Parameter.empty), ("num_executors", inspect.Parameter.empty),
    ("executor_cores", inspect.Parameter.empty), ("executor_memory", inspect.Parameter.empty),
    ("enable_hive", False), ("fault_tolerant_mode", True), ("placement_group_strategy", None),
    ("placement_group", None), ("placement_group_bundle_indexes", None), ("configs", None),
]


def test_init_spark_takes_raydp_s_arguments_in_raydp_s_order_with_its_defaults():
    params = list(inspect.signature(ray_on_spark.init_spark).parameters.values())
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == RAYDP_INIT_SPARK
    # ours come after RayDP's, keyword only, so no RayDP call can reach them by position
    assert [p.name for p in params[len(positional):]] == ["reserve_timeout_s"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[len(positional):])


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_a_bad_reserve_timeout_is_refused_naming_it(value):
    from ray_on_spark.on_ray.plan import check_reserve_timeout

    with pytest.raises(ValueError, match=r"reserve_timeout_s=.* must be a number of seconds > 0"):
        check_reserve_timeout(value)


def test_the_default_reserve_timeout_is_thirty_seconds():
    from ray_on_spark.on_ray.plan import check_reserve_timeout

    assert check_reserve_timeout(None) == 30.0 and check_reserve_timeout(600) == 600.0


def test_a_request_beyond_the_clusters_size_is_waited_for_when_the_cluster_may_grow():
    from ray_on_spark.on_ray.plan import check_fits

    plan = plan_executors("a", 4, 2, "1g")
    with pytest.raises(ValueError, match=r"= 8 CPUs, but this Ray cluster has 2 CPUs in all"):
        check_fits(plan, {"CPU": 2, "memory": 2**30}, [2])
    check_fits(plan, {"CPU": 2, "memory": 2**30}, [2], may_grow=True)


def test_stop_spark_takes_cleanup_data_as_raydp_does():
    (param,) = inspect.signature(ray_on_spark.stop_spark).parameters.values()
    assert (param.name, param.default) == ("cleanup_data", True)


def test_init_spark_refuses_a_fault_tolerant_mode_that_is_not_a_bool_before_starting_anything():
    with pytest.raises(TypeError, match=r"fault_tolerant_mode='yes' must be True or False"):
        ray_on_spark.init_spark("x", 1, 1, "1GB", False, "yes")


@pytest.mark.parametrize("parallelism, override, expected", [
    (None, None, None), (4, None, 4), (None, 8, 8), (3, 3, 3),
])
def test_the_block_count_comes_from_override_num_blocks_or_its_older_name(parallelism, override, expected):
    assert num_blocks_wanted(parallelism, override) == expected


@pytest.mark.parametrize("parallelism, override, message", [
    (0, None, r"parallelism=0 must be a whole number of blocks >= 1"),
    (None, -1, r"override_num_blocks=-1 must be"),
    (None, 2.5, r"override_num_blocks=2.5 must be"),
    (2, 3, r"parallelism=2 and override_num_blocks=3 disagree"),
])
def test_a_bad_block_count_is_refused_naming_the_argument(parallelism, override, message):
    with pytest.raises(ValueError, match=message):
        num_blocks_wanted(parallelism, override)


# ---------------------------------------------------------------- lost executors: how many are replaced
from ray_on_spark.on_ray.plan import RestartPolicy, plan_executors  # noqa: E402
from ray_on_spark.runtime.units import parse_duration  # noqa: E402


@pytest.mark.parametrize("text, seconds", [("10min", 600), ("600s", 600), ("1h", 3600), ("500ms", 0.5), ("90", 90),
                                           (45, 45), ("2 m", 120)])
def test_spark_time_strings_are_read_as_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "10 parsecs", None, True])
def test_an_unreadable_duration_is_refused_naming_it(text):
    with pytest.raises(ValueError, match=r"is not a duration; use a Spark time string like '10min'"):
        parse_duration(text, name="x")


def test_sparks_default_replaces_twice_the_executors_or_three_within_ten_minutes():
    assert plan_executors("a", 1, 1, "1g").restarts == RestartPolicy(3, 600.0)
    assert plan_executors("a", 4, 1, "1g").restarts == RestartPolicy(8, 600.0)


def test_sparks_own_confs_set_the_replacement_budget():
    plan = plan_executors("a", 2, 1, "1g", {"spark.executor.maxNumFailures": "2",
                                            "spark.executor.failuresValidityInterval": "1min"})
    assert plan.restarts == RestartPolicy(2, 60.0)


@pytest.mark.parametrize("earlier, now, allowed", [
    ([], 0.0, True), ([0.0], 10.0, True), ([0.0, 10.0], 30.0, False), ([0.0, 10.0], 65.0, True),
])
def test_failures_older_than_the_window_no_longer_count(earlier, now, allowed):
    assert RestartPolicy(2, 60.0).allows(earlier, now) is allowed


def test_zero_max_failures_never_replaces():
    assert not plan_executors("a", 2, 1, "1g", {"spark.executor.maxNumFailures": "0"}).restarts.allows([], 0.0)


@pytest.mark.parametrize("configs, message", [
    ({"spark.executor.maxNumFailures": "many"}, r"maxNumFailures'\]='many' must be a whole number >= 0"),
    ({"spark.executor.maxNumFailures": "-2"}, r"must be a whole number >= 0"),
    ({"spark.executor.failuresValidityInterval": "often"}, r"failuresValidityInterval'\]='often' is not a duration"),
    ({"spark.executor.failuresValidityInterval": "0s"}, r"must be longer than 0"),
])
def test_a_bad_replacement_conf_is_refused_before_anything_starts(configs, message):
    with pytest.raises(ValueError, match=message):
        plan_executors("a", 2, 1, "1g", configs)


# ---------------------------------------------------------------- what each executor's actor reserves
from ray_on_spark.on_ray.plan import ActorResources  # noqa: E402


def test_raydp_actor_resource_confs_and_spark_gpu_amount_make_the_bundle():
    plan = plan_executors("a", 2, 2, "1g", {
        "spark.ray.raydp_spark_executor.actor.resource.cpu": "0.5",
        "spark.ray.raydp_spark_executor.actor.resource.accel": "2",
        "spark.ray.actor.resource.fpga": "1",  # RayDP's older spelling
        "spark.executor.resource.gpu.amount": "1"})
    assert plan.actor == ActorResources(0.5, 1, {"accel": 2.0, "fpga": 1.0})
    assert plan.bundle() == {"CPU": 0.5, "GPU": 1.0, "memory": float(2**30), "accel": 2.0, "fpga": 1.0}


def test_without_resource_confs_an_actor_reserves_its_cores_and_heap():
    assert plan_executors("a", 2, 2, "1g").bundle() == {"CPU": 2.0, "memory": float(2**30)}


@pytest.mark.parametrize("configs, message", [
    ({"spark.ray.raydp_spark_master.actor.resource.cpu": "1"}, r"is a RayDP setting that ray_on_spark does not implement"),
    ({"spark.ray.preferClassPath": "true"}, r"'spark.ray.preferClassPath'\] is a RayDP setting"),
    ({"spark.ray.raydp_spark_executor.actor.resource.cpu": "0"}, r"must be a number > 0"),
    ({"spark.ray.raydp_spark_executor.actor.resource.GPU": "1"}, r"use spark.executor.resource.gpu.amount for GPUs"),
    ({"spark.executor.resource.gpu.amount": "0.5"}, r"must be a whole number of GPUs >= 1"),
])
def test_resource_confs_we_cannot_honour_are_refused_by_name(configs, message):
    with pytest.raises(ValueError, match=message):
        plan_executors("a", 2, 1, "1g", configs)


def test_a_cluster_without_the_gpus_or_resources_asked_for_is_refused_before_start():
    from ray_on_spark.on_ray.plan import check_fits

    plan = plan_executors("a", 2, 1, "1g", {"spark.executor.resource.gpu.amount": "1",
                                            "spark.ray.raydp_spark_executor.actor.resource.accel": "1"})
    with pytest.raises(ValueError, match=r"= 2 GPU, but this Ray cluster has 1 GPU in all"):
        check_fits(plan, {"CPU": 4, "GPU": 1, "accel": 2, "memory": 8 * 2**30}, [4])
    with pytest.raises(ValueError, match=r"actor.resource.accel=1 = 2 accel, but this Ray cluster has 0 accel"):
        check_fits(plan, {"CPU": 4, "GPU": 2, "memory": 8 * 2**30}, [4])
    check_fits(plan, {"CPU": 4, "GPU": 2, "accel": 2, "memory": 8 * 2**30}, [4])


# ---------------------------------------------------------------- submit: what it accepts before connecting
from ray_on_spark.on_ray.submit import Submission, check_submission  # noqa: E402


def test_a_pyspark_file_is_accepted_with_an_absolute_path_and_its_name(tmp_path, monkeypatch):
    (tmp_path / "etl_job.py").write_text("")
    monkeypatch.chdir(tmp_path)
    sub = check_submission(Submission("etl_job.py", ["a", "--b"]))
    assert sub.app == str(tmp_path / "etl_job.py") and sub.app_args == ["a", "--b"] and sub.app_name == "etl_job"


@pytest.mark.parametrize("name, main_class, message", [
    ("missing.py", None, r"is not a file"),
    ("app.jar", None, r"is a jar: name its main class with --class"),
    ("app.py", "com.example.Main", r"--class com.example.Main is for a jar"),
    ("app.sh", None, r"is neither a .py file nor a .jar"),
])
def test_a_submission_that_cannot_run_is_refused_naming_what_works(tmp_path, name, main_class, message):
    for existing in ("app.jar", "app.py", "app.sh"):
        (tmp_path / existing).write_text("")
    with pytest.raises(ValueError, match=message):
        check_submission(Submission(str(tmp_path / name), main_class=main_class))


# ---------------------------------------------------------------- dynamic allocation (pure parts)
from ray_on_spark.on_ray.dynamic import Moves, decide  # noqa: E402
from ray_on_spark.on_ray.plan import DynamicAllocation  # noqa: E402

DYN = {"spark.dynamicAllocation.enabled": "true"}


def test_dynamic_allocation_starts_at_zero_executors_and_uses_no_placement_group():
    plan = plan_executors("a", 0, 1, "1GB", {**DYN, "spark.dynamicAllocation.maxExecutors": "3"})
    assert plan.dynamic == DynamicAllocation(minimum=0, maximum=3, initial=0)
    confs = plan.spark_confs("spark://h:1", "h", "python")
    assert confs["spark.dynamicAllocation.enabled"] == "true" and "spark.cores.max" not in confs
    # no external shuffle service: Spark keeps executors that hold live shuffle data
    assert confs["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"
    assert confs["spark.executor.instances"] == "0"


def test_sparks_initial_executor_count_is_the_largest_of_min_initial_and_num_executors():
    plan = plan_executors("a", 1, 1, "1GB", {**DYN, "spark.dynamicAllocation.minExecutors": "2",
                                              "spark.dynamicAllocation.initialExecutors": "1"})
    assert plan.dynamic.initial == 2 and plan.initial_executors == 2


def test_a_fixed_session_still_refuses_zero_executors_and_sets_cores_max():
    with pytest.raises(ValueError, match=r"num_executors=0 must be >= 1"):
        plan_executors("a", 0, 1, "1GB")
    confs = plan_executors("a", 2, 1, "1GB").spark_confs("spark://h:1", "h", "python")
    assert confs["spark.dynamicAllocation.enabled"] == "false" and confs["spark.cores.max"] == "2"


@pytest.mark.parametrize("configs, kwargs, message", [
    ({"spark.dynamicAllocation.maxExecutors": "0"}, {}, r"maxExecutors'\]='0' must be >= 1"),
    ({"spark.dynamicAllocation.minExecutors": "3", "spark.dynamicAllocation.maxExecutors": "2"}, {},
     r"must be >= 1 and >= spark.dynamicAllocation.minExecutors=3"),
    ({"spark.dynamicAllocation.minExecutors": "-1"}, {}, r"minExecutors'\]='-1' must be a whole number"),
    ({"spark.dynamicAllocation.maxExecutors": "2"}, {"num_executors": 3}, r"starts 3 executors, more than"),
    ({}, {"placement_group_strategy": "PACK"}, r"cannot be combined with a placement group"),
])
def test_bad_dynamic_allocation_settings_are_refused_before_anything_starts(configs, kwargs, message):
    args = {"num_executors": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        plan_executors("a", args.pop("num_executors"), 1, "1GB", {**DYN, **configs}, **args)


def test_a_rising_target_starts_the_executors_missing():
    assert decide(3, pending=[2], running=[0], removing=set()) == Moves(launch=1)


def test_a_falling_target_gives_up_the_newest_pending_executors_not_running_ones():
    assert decide(1, pending=[3, 4], running=[0, 1], removing=set()) == Moves(cancel=(4, 3))


def test_executors_spark_removes_are_stopped_and_not_replaced_while_the_target_fell_with_them():
    assert decide(1, pending=[], running=[0, 1], removing={1}) == Moves(remove=(1,))


def test_a_lost_executor_no_longer_running_is_started_again_while_the_target_counts_it():
    assert decide(2, pending=[], running=[1], removing=set()) == Moves(launch=1)


def test_a_pending_executor_that_already_registered_is_never_given_up():
    assert decide(1, pending=[3, 4], running=[0], removing=set(), registered={0, 4}) == Moves(cancel=(3,))


def test_requests_beyond_the_clusters_room_queue_one_actor_not_thousands():
    assert decide(5000, pending=[], running=[0, 1], removing=set(), room=4) == Moves(launch=2)
    # full: one waits, which is what an autoscaler needs to see; no more than that
    assert decide(5000, pending=[], running=[0, 1], removing=set(), room=2) == Moves(launch=1)
    assert decide(5000, pending=[2], running=[0, 1], removing=set(), room=2) == Moves(launch=0)


def test_the_clusters_room_is_the_scarcest_resource_of_a_bundle():
    from ray_on_spark.on_ray.dynamic import cluster_room

    assert cluster_room({"CPU": 8.0, "memory": 3 * 2**30}, {"CPU": 1.0, "memory": 2**30}) == 3
    assert cluster_room({"CPU": 8.0}, {"CPU": 1.0, "GPU": 1.0}) == 0


def test_an_external_shuffle_service_is_refused_with_dynamic_allocation_naming_shuffle_tracking():
    with pytest.raises(ValueError, match=r"no external shuffle service runs beside executors in Ray actors"):
        plan_executors("a", 0, 1, "1GB", {**DYN, "spark.shuffle.service.enabled": "true"})
    confs = plan_executors("a", 0, 1, "1GB", {**DYN, "spark.shuffle.service.enabled": "false"}).spark_confs(
        "spark://h:1", "h", "python")
    assert confs["spark.dynamicAllocation.shuffleTracking.enabled"] == "true"


def test_with_zero_initial_executors_one_executor_must_still_fit_the_cluster():
    from ray_on_spark.on_ray.plan import check_fits

    plan = plan_executors("a", 0, 1, "4GB", DYN)
    with pytest.raises(ValueError, match=r"num_executors=1 x executor_memory=4.00 GiB"):
        check_fits(plan, {"CPU": 4.0, "memory": 2.0 * 2**30}, [4.0])


def test_a_negative_num_executors_with_dynamic_allocation_is_told_zero_works():
    with pytest.raises(ValueError, match=r"num_executors=-1 must be an integer >= 0 with dynamic allocation"):
        plan_executors("a", -1, 1, "1GB", DYN)
