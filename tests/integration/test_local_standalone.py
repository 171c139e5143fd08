"""The test rig's own Spark standalone cluster goes with the process that started it.

A benchmark or a test cut off by its timeout is SIGKILLed: its ``LocalStandaloneSpark`` gets
no ``stop()``. The daemons run under the library's supervisor, which notices its parent's
death and ends the daemon's whole tree, executors included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.any_spark  # the rig, not the library's Spark-version-dependent paths

OWNER = """
import sys
from ray_on_spark.testing.local_standalone import LocalStandaloneSpark, session_builder
local = LocalStandaloneSpark(num_workers=1, cores=1, memory="1g").start()
spark = session_builder(local.master_url, "owner-killed").getOrCreate()
assert spark.range(100, numPartitions=1).count() == 100  # an executor is running now
print("WORK_DIR", local.work_dir, flush=True)
sys.stdin.read()  # until the test kills us
"""


def _command(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) if p.status() != psutil.STATUS_ZOMBIE else ""
    except psutil.Error:  # gone (or a zombie) meanwhile
        return ""


def _alive(processes: list) -> list:
    return [f"{p.pid} {_command(p)[:120]}" for p in processes if _command(p)]


def test_a_standalone_cluster_whose_owner_is_sigkilled_leaves_no_spark_process():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("WORK_DIR") and time.monotonic() < deadline:
            line = owner.stdout.readline()
            assert line or owner.poll() is None, "the owner exited before its cluster was up"
        tree = psutil.Process(owner.pid).children(recursive=True)
        commands = " ".join(_command(p) for p in tree)
        assert "deploy.master.Master" in commands and "deploy.worker.Worker" in commands
        assert "CoarseGrainedExecutorBackend" in commands  # the session's executor, under the worker
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 30
    while _alive(tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(tree) == [], "Spark daemons outlived their owner"
