"""The command line as a shell user meets it: help on every command, mistakes refused in one line with exit 2,
a missing cluster is exit 1 -- never a traceback. Nothing here starts Spark or Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "ray_on_spark"]


def _run(*args, env=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("command", [[], ["start"], ["status"], ["check"]])
def test_every_command_has_help(command):
    r = _run(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: ray-on-spark" in r.stdout


def test_start_lists_setup_ray_clusters_options_as_flags():
    out = _run("start", "--help").stdout
    for flag in ("--max-worker-nodes", "--min-worker-nodes", "--num-cpus-worker-node", "--num-gpus-worker-node",
                 "--memory-worker-node", "--object-store-memory-worker-node", "--head-node-options",
                 "--worker-node-options", "--collect-log-to-path", "--autoscale-idle-timeout-minutes", "--strict-mode",
                 "--master", "--conf"):
        assert flag in out, flag


@pytest.mark.parametrize("args, message", [
    (["start", "--max-worker-nodes", "0"], "max_worker_nodes=0 must be >= 1"),
    (["start", "--max-worker-nodes", "2", "--memory-worker-node", "lots"], "memory_worker_node='lots' is not a memory size"),
    (["start", "--max-worker-nodes", "2", "--worker-node-options", '{"num_cpus": 4}'], "num_cpus_worker_node"),
    (["start", "--max-worker-nodes", "two"], "is not a number of nodes"),
    (["start", "--max-worker-nodes", "2", "--conf", "executor.memory=1g"], "write --conf spark.key=value"),
    (["start"], "the following arguments are required: --max-worker-nodes"),
    (["status", "--token-file", "/x"], "--token-file goes with --address"),
])
def test_a_mistake_is_one_line_on_stderr_with_exit_2_and_no_traceback(args, message):
    r = _run(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_status_without_a_global_cluster_says_how_to_start_one_with_exit_1(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    r = _run("status", env=env)
    assert r.returncode == 1
    assert "No global Ray-on-Spark cluster is running" in r.stderr and "ray-on-spark start" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_console_script_is_installed_beside_python():
    script = os.path.join(os.path.dirname(sys.executable), "ray-on-spark")
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: ray-on-spark" in r.stdout
