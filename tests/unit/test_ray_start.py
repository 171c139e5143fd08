"""Unit tests for ray_on_spark.on_spark.ray_start: validating *_node_options and building ray start args."""

from __future__ import annotations

import json

import pytest

from ray_on_spark._ray import ray_start_option_names
from ray_on_spark.on_spark.ray_start import (
    HEAD_BLOCKED_KEYS,
    WORKER_BLOCKED_KEYS,
    labels_arg,
    to_cli_args,
    validate_node_options,
)

# --------------------------------------------------------------------------- validate_node_options


def test_none_options_mean_no_options():
    assert validate_node_options(None, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS) == {}


def test_valid_options_are_returned_as_a_copy():
    given = {"include_log_monitor": False, "log_style": "record", "disable_usage_stats": None}
    out = validate_node_options(given, argument="head_node_options", blocked=HEAD_BLOCKED_KEYS)
    assert out == given
    assert out is not given
    out["extra"] = 1
    assert "extra" not in given


@pytest.mark.parametrize(
    "key, suggestion",
    [("--log-style", "log_style"), ("log-style", "log_style"), ("-v", "v"), ("include-log-monitor", "include_log_monitor")],
)
def test_dash_style_keys_are_refused_with_the_underscore_spelling(key, suggestion):
    with pytest.raises(ValueError) as err:
        validate_node_options({key: "x"}, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)
    msg = str(err.value)
    assert "worker_node_options" in msg
    assert repr(key) in msg
    assert f"'{suggestion}'" in msg
    assert "underscores" in msg


@pytest.mark.parametrize(
    "key, instead",
    [
        ("num_cpus", "num_cpus_worker_node"),
        ("num_gpus", "num_gpus_worker_node"),
        ("memory", "memory_worker_node"),
        ("object_store_memory", "object_store_memory_worker_node"),
        ("temp_dir", "ray_temp_root_dir"),
    ],
)
def test_blocked_worker_keys_are_refused_naming_the_setup_ray_cluster_argument(key, instead):
    with pytest.raises(ValueError) as err:
        validate_node_options({key: 1}, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)
    msg = str(err.value)
    assert "worker_node_options" in msg
    assert repr(key) in msg
    assert f"setup_ray_cluster argument '{instead}'" in msg


@pytest.mark.parametrize(
    "key, instead",
    [
        ("num_cpus", "num_cpus_head_node"),
        ("num_gpus", "num_gpus_head_node"),
        ("memory", "memory_head_node"),
        ("object_store_memory", "object_store_memory_head_node"),
    ],
)
def test_blocked_head_keys_name_the_head_argument(key, instead):
    with pytest.raises(ValueError, match=f"'{instead}'"):
        validate_node_options({key: 1}, argument="head_node_options", blocked=HEAD_BLOCKED_KEYS)


@pytest.mark.parametrize("key", ["port", "address", "block", "head", "node_ip_address", "labels", "min_worker_port"])
def test_keys_the_library_sets_itself_are_refused_saying_so(key):
    with pytest.raises(ValueError) as err:
        validate_node_options({key: 1}, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)
    msg = str(err.value)
    assert repr(key) in msg
    assert "ray_on_spark sets it itself" in msg


def test_dashboard_options_are_allowed_on_the_head_but_not_on_workers():
    opts = {"include_dashboard": True, "dashboard_port": 8265}
    assert validate_node_options(opts, argument="head_node_options", blocked=HEAD_BLOCKED_KEYS) == opts
    with pytest.raises(ValueError, match="dashboard"):
        validate_node_options(opts, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)


def test_unknown_keys_are_refused_when_known_names_are_given():
    known = ["log_style", "log_color", "include_log_monitor", "num_cpus"]
    with pytest.raises(ValueError) as err:
        validate_node_options({"log_colour": "auto"}, argument="head_node_options", blocked={}, known=known)
    msg = str(err.value)
    assert "head_node_options" in msg
    assert "'log_colour'" in msg
    assert "not a `ray start` option" in msg
    assert "'log_color'" in msg and "'log_style'" in msg  # close matches suggested


def test_unknown_key_without_close_match_points_to_ray_start_help():
    with pytest.raises(ValueError, match="ray start --help"):
        validate_node_options({"zzz": 1}, argument="head_node_options", blocked={}, known=["log_style"])


def test_unknown_keys_pass_when_known_is_not_given():
    assert validate_node_options({"zzz": 1}, argument="head_node_options", blocked={}) == {"zzz": 1}


def test_known_keys_pass():
    out = validate_node_options({"log_style": "record"}, argument="a", blocked={}, known=["log_style"])
    assert out == {"log_style": "record"}


@pytest.mark.parametrize("options", [["log_style"], "log_style=record", 3, ("a", 1)])
def test_non_dict_options_are_refused_with_an_example(options):
    with pytest.raises(ValueError) as err:
        validate_node_options(options, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)
    msg = str(err.value)
    assert "worker_node_options" in msg
    assert "must be a dict" in msg


@pytest.mark.parametrize("key", [1, "", None])
def test_non_string_or_empty_keys_are_refused(key):
    with pytest.raises(ValueError, match="worker_node_options"):
        validate_node_options({key: 1}, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS)


def test_real_ray_start_names_accept_common_options_and_refuse_typos():
    known = ray_start_option_names()
    ok = {"include_log_monitor": False, "log_style": "record", "disable_usage_stats": None}
    assert validate_node_options(ok, argument="worker_node_options", blocked=WORKER_BLOCKED_KEYS, known=known) == ok
    with pytest.raises(ValueError, match="not a `ray start` option"):
        validate_node_options({"include_log_monitr": False}, argument="worker_node_options",
                              blocked=WORKER_BLOCKED_KEYS, known=known)


def test_every_blocked_key_with_a_replacement_is_a_real_ray_start_option():
    known = set(ray_start_option_names())
    for blocked in (HEAD_BLOCKED_KEYS, WORKER_BLOCKED_KEYS):
        for key in blocked:
            assert key in known, key


# --------------------------------------------------------------------------- to_cli_args


def test_none_value_becomes_a_bare_flag():
    assert to_cli_args({"disable_usage_stats": None}) == ["--disable-usage-stats"]


def test_bool_values_become_lowercase_true_false():
    assert to_cli_args({"include_log_monitor": False, "include_dashboard": True}) == [
        "--include-log-monitor=false",
        "--include-dashboard=true",
    ]


def test_dict_and_list_values_become_json():
    args = to_cli_args({"resources": {"custom": 2, "x": 0.5}, "worker_port_list": [1, 2]})
    assert args[0].startswith("--resources=")
    assert json.loads(args[0].split("=", 1)[1]) == {"custom": 2, "x": 0.5}
    assert json.loads(args[1].split("=", 1)[1]) == [1, 2]


def test_other_values_become_key_equals_value():
    assert to_cli_args({"log_style": "record", "num_cpus": 4, "memory": 1.5}) == [
        "--log-style=record",
        "--num-cpus=4",
        "--memory=1.5",
    ]


def test_cli_args_keep_the_option_order():
    opts = {"b_opt": 1, "a_opt": None, "c_opt": False}
    assert to_cli_args(opts) == ["--b-opt=1", "--a-opt", "--c-opt=false"]


def test_empty_options_give_no_args():
    assert to_cli_args({}) == []


# --------------------------------------------------------------------------- labels_arg


def test_labels_render_as_comma_separated_key_value_pairs():
    assert labels_arg({"a": "1", "b": "x-y"}) == "a=1,b=x-y"
    assert labels_arg({}) == ""


def test_labels_accept_non_string_values():
    assert labels_arg({"partition": 3}) == "partition=3"


@pytest.mark.parametrize("labels", [{"a,b": "1"}, {"a=b": "1"}, {"a": "1,2"}, {"a": "x=y"}])
def test_labels_with_separators_are_refused(labels):
    with pytest.raises(ValueError, match="may not contain"):
        labels_arg(labels)


# --------------------------------------------------------------------------- ray_start_option_names


def test_ray_start_option_names_include_the_options_we_rely_on():
    names = ray_start_option_names()
    assert "num_cpus" in names
    assert "include_log_monitor" in names
    assert "labels" in names
    assert all(isinstance(n, str) and n and "-" not in n for n in names)


def test_switched_on_reads_every_on_off_variable_one_way():
    from ray_on_spark.runtime.switches import switched_on_value as switched_on

    assert switched_on(None) and switched_on("") and switched_on("1") and switched_on("yes")
    for off in ("0", "false", "FALSE", " no ", "Off"):
        assert not switched_on(off), off


# --------------------------------------------------------------------------- command lines and environment
def test_head_and_worker_commands_share_resources_ports_and_labels_and_end_with_the_users_options():
    from ray_on_spark.on_spark.ray_start import NodeShape, head_command, worker_command

    common = dict(shape=NodeShape(2, 1, 1000, 500), temp_dir="/t",
                  labels={"ray-on-spark-cluster": "c1"}, options={"log_style": "record"})
    head = head_command(host="10.0.0.1", port=6380, client_server_port=10001, dashboard=("127.0.0.1", 8265), **common)
    worker = worker_command(head_address="10.0.0.1:6380", **common)
    for cmd in (head, worker):
        assert cmd[-1] == "--log-style=record"  # the user's options come last
        for arg in ("--num-cpus=2", "--num-gpus=1", "--memory=1000", "--object-store-memory=500", "--temp-dir=/t",
                    "--min-worker-port=0", "--max-worker-port=0", "--labels=ray-on-spark-cluster=c1"):
            assert arg in cmd, (arg, cmd)
        assert "--block" not in cmd  # the supervisor watches the node; a blocking CLI would only cost memory
    assert "--head" in head and "--port=6380" in head and "--dashboard-port=8265" in head
    assert "--address=10.0.0.1:6380" in worker and "--head" not in worker
    # a worker's ray start waits for the head node itself, at a finer step than Ray's 1-2 s sleeps
    split = worker.index("--")
    assert worker[1:3] == ["-m", "ray_on_spark.on_spark.join_head"] and worker[split + 1] == "start"
    assert "--address=10.0.0.1:6380" in worker[:split] and "--wait=120" in worker[:split]
    assert "--import-early" not in worker  # beside the head, Ray's CLI is imported once the head is up
    elsewhere = worker_command(head_address="10.0.0.1:6380", head_on_this_host=False, **common)
    assert "--import-early" in elsewhere[:elsewhere.index("--")]  # on another host it overlaps the head's start
    # given the head's temp dir (the driver's worker plan carries it), it waits only for the head's GCS
    assert not any(a.startswith("--head-temp-dir") for a in worker)
    early = worker_command(head_address="10.0.0.1:6380", head_temp_dir="/tmp/ros-c1/head", **common)
    assert "--head-temp-dir=/tmp/ros-c1/head" in early[:early.index("--")]
    assert "--include-dashboard=false" in head_command(host="h", port=1, client_server_port=2, dashboard=None, **common)


def test_node_env_carries_the_token_or_disables_auth_and_pins_the_gpus():
    from ray_on_spark.on_spark.ray_start import node_env

    base = {"RAY_ADDRESS": "x:1", "RAY_AUTH_TOKEN": "old", "PATH": "/bin"}
    with_token = node_env(auth_token="tok", gpus=["1", "3"], temp_dir="/t", base=base)
    assert with_token["RAY_AUTH_MODE"] == "token" and with_token["RAY_AUTH_TOKEN"] == "tok"
    assert with_token["CUDA_VISIBLE_DEVICES"] == "1,3" and with_token["TMPDIR"] == "/t"
    assert "RAY_ADDRESS" not in with_token and with_token["PATH"] == "/bin"
    without = node_env(auth_token=None, gpus=[], temp_dir="/t", base=base)
    assert without["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN" not in without
    assert without["CUDA_VISIBLE_DEVICES"] == ""


def test_worker_nodes_wait_for_the_heads_raylet_as_long_as_setup_waits():
    """Ray's own patience is 20 tries x 2 s = 40 s; a 120 s setup gives its workers 61 tries (122 s)."""
    from ray_on_spark.on_spark.ray_start import HEAD_INFO_RETRIES_ENV, worker_patience_env

    assert worker_patience_env(120.0) == {HEAD_INFO_RETRIES_ENV: "61"}
    assert worker_patience_env(10.0) == {HEAD_INFO_RETRIES_ENV: "20"}  # never less than Ray's default


def test_a_worker_node_whose_head_never_registers_gives_up_at_its_deadline_and_says_why():
    import os
    import subprocess
    import sys

    from ray_on_spark.runtime.ports import free_ports

    (port,) = free_ports(1)  # nothing listens there
    run = subprocess.run([sys.executable, "-m", "ray_on_spark.on_spark.join_head", f"--address=127.0.0.1:{port}",
                          "--wait=1", "--", "start", f"--address=127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert run.returncode == 1, run.stderr
    assert f"not starting this worker node: Timed out after 1s waiting for the Ray head node at 127.0.0.1:{port}" \
        in run.stderr
    usage = subprocess.run([sys.executable, "-m", "ray_on_spark.on_spark.join_head", "--address=x:1"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr
