"""Spark on Ray across hosts: a plain ``ray start`` head on host0 (no CPUs, so nothing of Spark's
lands there but the driver), a ``ray start`` worker of 2 CPUs on each of host1 and host2, and
``init_spark`` from a driver on host0.

What only a second host exercises: the master and the driver bind host0's address (executors on
other hosts must reach them; loopback would do on one host), the executors spread over the worker
hosts, a shuffle and the conversions run across them, ``stop_spark`` gives Ray back every CPU, and
nothing of the session (executor JVMs, their Python workers, temp dirs) is left on any host.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import psutil
import pytest

from .agent import Agent
from .checks import listeners
from .spark_hosts import host_env

log = logging.getLogger(__name__)

REPO = str(Path(__file__).resolve().parents[2])
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
HEAD_PORT = 6379

pytestmark = pytest.mark.any_spark  # processes and addresses, not pyspark's API


#: The Ray cluster's token: secured as Ray 2.60 secures a cluster (every node, and the driver, carry it).
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _env(host) -> dict:
    return {**host_env(host), **AUTH}


def _ray_start(host, *args: str) -> None:
    done = host.run([RAY, "start", f"--node-ip-address={host.ip}", "--disable-usage-stats", *args],
                    env=_env(host), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"ray start on {host.name}: {done.stdout[-2000:]}{done.stderr[-3000:]}"


def _end_everything_in(hosts, timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL, every process of these hosts but their init: all of it was started here."""
    victims: List[psutil.Process] = []
    for h in hosts:
        for pid in h.pids():
            if pid != h.init_pid:
                try:
                    victims.append(psutil.Process(pid))
                except psutil.Error:
                    pass
    for p in victims:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(victims, timeout=timeout / 2)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=timeout / 2)


def _session_leftovers(host, driver_pid: int) -> dict:
    """What a Spark-on-Ray session could leave on a host while Ray runs on: JVMs (but the driver's own
    pyspark gateway, which lives as long as the driver's Python, as in pyspark and RayDP) and our
    temp dirs."""
    java = []
    for pid in host.pids():
        try:
            p = psutil.Process(pid)
            cmd = p.cmdline()
            if cmd and os.path.basename(cmd[0]) == "java" and p.ppid() != driver_pid:
                java.append(" ".join(cmd)[:150])
        except psutil.Error:
            continue
    listing = host.run(["sh", "-c", "ls -A /tmp /dev/shm"], capture_output=True, text=True, timeout=30).stdout.split()
    return {"java": java, "files": sorted(n for n in listing if n.startswith("ros-"))}


@pytest.fixture(scope="module")
def ray_hosts(rig, tmp_path_factory) -> Iterator[dict]:
    hosts = [rig[0], rig[1], rig[2]]
    for h in hosts:
        assert h.pids() == [h.init_pid], f"{h.name} is not idle: {h.pids()}"
    logs = str(tmp_path_factory.mktemp("multihost-spark-on-ray"))
    agent = None
    try:
        _ray_start(rig[0], "--head", f"--port={HEAD_PORT}", "--num-cpus=0", "--include-dashboard=false")
        for h in (rig[1], rig[2]):
            _ray_start(h, f"--address={rig[0].ip}:{HEAD_PORT}", "--num-cpus=2", "--memory=2147483648")
        agent = Agent(rig[0], os.path.join(logs, "driver.log"), _env(rig[0]), REPO)
        resources = agent.call("ray_connect", address=f"{rig[0].ip}:{HEAD_PORT}")
        assert resources["cpus"] == 4, resources
        yield {"agent": agent, "hosts": hosts}
    finally:
        if agent is not None:
            agent.close()
        _end_everything_in(hosts)
    for h in hosts:
        assert h.pids() == [h.init_pid], f"{h.name} still runs {h.pids()}"


def test_executors_spread_over_hosts_bind_the_hosts_address_and_stop_spark_leaves_nothing(ray_hosts, rig):
    agent = ray_hosts["agent"]
    session = agent.call("init_spark", app_name="multihost", num_executors=2, executor_cores=1,
                         executor_memory="512M", timeout=300)
    log.info("init_spark across hosts: %s", session)
    stopped = False
    try:
        assert session["executors"] == 2
        assert session["master"].startswith(f"spark://{rig[0].ip}:"), session["master"]
        assert session["driver_host"] == rig[0].ip and session["driver_bind"] in (rig[0].ip, "0.0.0.0"), session
        assert session["executor_hosts"] == sorted([rig[1].ip, rig[2].ip]), session  # SPREAD
        job = agent.call("spark_job")
        assert job["sum"] == sum(range(1_000_000))
        assert job["task_hostnames"] == ["host1", "host2"], job
        shared = tempfile.mkdtemp(prefix="ros-mh-parquet-", dir="/var/tmp")  # every host sees /var/tmp
        try:
            out = agent.call("convert", rows=100_000, parquet_dir=os.path.join(shared, "t"), timeout=300)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
        twice = 2 * sum(range(100_000))
        assert out == {"from_spark": [100_000, twice], "to_spark": [100_000, twice + 100_000],
                       "from_parquet": [100_000, twice]}, out
        agent.call("stop_spark_on_ray")
        stopped = True
        deadline = time.monotonic() + 30
        resources = agent.call("ray_resources")
        while resources["available"].get("CPU", 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
            resources = agent.call("ray_resources")
        assert resources["available"].get("CPU", 0) == 4, resources  # every executor's CPU back in Ray
        driver = agent.proc.inner_pid()
        for h in ray_hosts["hosts"]:
            deadline = time.monotonic() + 30
            left = _session_leftovers(h, driver)
            while (left["java"] or left["files"]) and time.monotonic() < deadline:
                time.sleep(0.5)
                left = _session_leftovers(h, driver)
            assert left == {"java": [], "files": []}, (h.name, left)
        master_port = int(session["master"].rsplit(":", 1)[1])  # the master (in the driver's JVM) is stopped
        assert not [e for e in listeners(rig[0]) if e["port"] == master_port]
    finally:
        if not stopped:
            agent.call("stop_spark_on_ray")
