"""Ray on Spark across hosts: a standalone master and the driver on host0, a Spark worker on each of
host1 and host2 (3 cores each), on the shared namespace rig. Worker nodes of 2 CPUs: one fits an
executor (so one lands on each host), and each host keeps a core for the conversions' jobs.

What only a second host exercises: the head advertises host0's address and the worker nodes their
own hosts'; tasks, actors and a 50 MB object cross hosts; conversions are exact when executors and
Ray nodes sit on other hosts than the driver; each worker node's object store comes from its own
host's /dev/shm (the rig limits it; the machine's is far larger); with every slot held by Ray nodes
a conversion is refused at once; and shutdown leaves no Ray process, temp dir or /dev/shm file on
any host. And a Spark worker on host3, which has no Ray node: a conversion's tasks that
land there reach the cluster as Ray Clients (Ray cannot connect a driver to a GCS from a host
without a raylet).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pytest

from .agent import Agent
from .checks import assert_nothing_left, listeners, wait_status
from .rig import DEFAULT_SHM_BYTES
from .spark_hosts import SparkOnHosts, host_env

log = logging.getLogger(__name__)

REPO = str(Path(__file__).resolve().parents[2])

pytestmark = pytest.mark.any_spark  # processes and addresses, not pyspark's API


@pytest.fixture(scope="module")
def cluster(rig, tmp_path_factory) -> Iterator[dict]:
    """Spark master + driver agent on host0, workers on host1 and host2; the agent's SparkSession up."""
    logs = str(tmp_path_factory.mktemp("multihost-logs"))
    spark = SparkOnHosts(rig[0], logs, REPO).start()
    agent = None
    try:
        for h in (rig[1], rig[2]):
            spark.add_worker(h, cores=3)
        agent = Agent(rig[0], os.path.join(logs, "driver.log"), host_env(rig[0]), REPO)
        agent.call("start_spark", master=spark.url, host=rig[0].ip)
        executors = agent.call("wait_executors", count=6)
        log.info("Spark across hosts: %s", executors)
        yield {"spark": spark, "agent": agent, "hosts": [rig[0], rig[1], rig[2]], "executors": executors}
        agent.call("stop_spark")
    finally:
        if agent is not None:
            agent.close()
        spark.stop()
        if os.environ.get("RAY_ON_SPARK_KEEP_SPARK_LOGS"):
            log.info("multi-host logs kept in %s", logs)
    for h in (rig[0], rig[1], rig[2], rig[3]):  # the agent and every Spark daemon are gone, with what they started
        assert h.pids() == [h.init_pid], f"{h.name} still runs {h.pids()}"


def test_nodes_advertise_their_own_hosts_work_crosses_hosts_and_conversions_are_exact(cluster, rig):
    agent = cluster["agent"]
    assert {rig[1].ip, rig[2].ip} <= set(cluster["executors"]["hosts"])  # (with the driver's)
    shared = tempfile.mkdtemp(prefix="ros-mh-parquet-", dir="/var/tmp")  # every host sees /var/tmp
    t0 = time.monotonic()
    agent.call("setup", max_worker_nodes=2, num_cpus_worker_node=2)
    took = time.monotonic() - t0
    try:
        layout = agent.call("layout")
        log.info("setup across hosts took %.1fs: %s", took, layout)
        assert layout["head"] == [rig[0].ip]
        workers = layout["workers"]
        assert [w["ip"] for w in workers] == sorted([rig[1].ip, rig[2].ip])
        # each node's object store is bounded by its own host's /dev/shm (512 MiB here, the
        # machine's is many GiB): the share was computed in the worker's host, not the driver's
        assert all(0 < w["object_store"] <= DEFAULT_SHM_BYTES for w in workers), workers
        work = agent.call("work_across_nodes", mib=50)
        log.info("work across hosts: %s", work)
        assert work["task_ips"] == sorted([rig[1].ip, rig[2].ip])
        assert work["actor_ips"] == sorted([rig[1].ip, rig[2].ip])
        assert work["crossed"][0] == 50 * 2**20 and work["crossed"][1] != work["made_on"]
        # the conversions' tasks run on the executors' free cores, on the nodes' hosts
        out = agent.call("convert", rows=100_000, parquet_dir=os.path.join(shared, "t"), timeout=300)
        log.info("conversions across hosts: %s", out)
        twice = 2 * sum(range(100_000))
        assert out == {"from_spark": [100_000, twice], "to_spark": [100_000, twice + 100_000],
                       "from_parquet": [100_000, twice]}, out
    finally:
        agent.call("shutdown")
        shutil.rmtree(shared, ignore_errors=True)
    assert_nothing_left(cluster["hosts"])


def test_with_every_slot_held_by_worker_nodes_a_conversion_is_refused_at_once(cluster, rig):
    """Two 3-CPU nodes hold all six cores: a conversion's job could never start."""
    agent = cluster["agent"]
    agent.call("setup", max_worker_nodes=2, num_cpus_worker_node=3)
    try:
        refused = agent.call("convert_expect_refusal")
        log.info("refused: %s", refused)
        assert refused["type"] == "NoFreeSparkSlotsError", refused
        assert refused["seconds"] < 10 and "max_worker_nodes=1" in refused["message"]
    finally:
        agent.call("shutdown")
    assert_nothing_left(cluster["hosts"])


def test_a_conversion_on_a_host_without_a_ray_node_runs_through_the_ray_client(cluster, rig):
    """Host3's Spark worker (1 core) joins after the Ray nodes took every core of hosts 1 and 2, so
    the conversions' tasks can only run there, where no Ray node is. They used to wait a minute in
    ray.init per attempt and fail ("No node info found matching attributes")."""
    agent, spark = cluster["agent"], cluster["spark"]
    agent.call("setup", max_worker_nodes=2, num_cpus_worker_node=3)
    try:
        spark.add_worker(rig[3], cores=1)
        deadline = time.monotonic() + 60
        executors = agent.call("wait_executors", count=7)
        while rig[3].ip not in executors["hosts"]:  # Spark's status tracker lists it a moment after its slot
            assert time.monotonic() < deadline, executors
            time.sleep(0.5)
            executors = agent.call("wait_executors", count=7)
        t0 = time.monotonic()
        out = agent.call("convert", rows=100_000, timeout=300)
        log.info("conversions on a host without a Ray node took %.1fs: %s", time.monotonic() - t0, out)
        twice = 2 * sum(range(100_000))
        assert out == {"from_spark": [100_000, twice], "to_spark": [100_000, twice + 100_000]}, out
    finally:
        agent.call("shutdown")
        spark.stop_worker(rig[3])
    assert_nothing_left(cluster["hosts"] + [rig[3]])


TOKENLESS_GCS = """
import sys
from ray._raylet import GcsClient
try:
    nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10)
    print("ANSWERED", len(nodes))
except Exception as e:
    print("REFUSED", type(e).__name__, str(e)[:300])
"""

TOKENLESS_CLIENT = """
import sys
import ray
try:
    ray.init(address=sys.argv[1], logging_level="ERROR")
    print("ANSWERED", ray.cluster_resources())
except Exception as e:
    print("REFUSED", type(e).__name__, str(e)[:300])
"""


def _tokenless(host, script: str, address: str) -> str:
    env = {k: v for k, v in host_env(host).items() if not k.startswith("RAY_AUTH")}
    done = host.run([sys.executable, "-c", script, address], env=env, cwd=REPO, capture_output=True, text=True,
                    timeout=120)
    return (done.stdout.strip().splitlines() or [f"rc={done.returncode} {done.stderr[-500:]}"])[-1]


def test_listening_sockets_on_every_host_and_a_client_without_the_token_is_refused(cluster, rig):
    """An autoscaling cluster (so the node launcher runs too) with one worker node; every listening
    socket of every host is printed. The dashboard and the launcher listen on loopback only; from
    other hosts, the GCS and the Ray Client server refuse a caller without the cluster's token."""
    agent = cluster["agent"]
    hosts = cluster["hosts"]
    started = agent.call("setup", max_worker_nodes=2, min_worker_nodes=1, num_cpus_worker_node=2)
    try:
        sockets = {h.name: listeners(h) for h in hosts}
        print("listening sockets per host:\n" + json.dumps(sockets, indent=1))
        dashboard = urlparse(started["dashboard_url"]).port
        on_dashboard = [e for e in sockets["host0"] if e["port"] == dashboard]
        assert on_dashboard and {e["address"] for e in on_dashboard} == {"127.0.0.1"}, on_dashboard
        launcher = urlparse(started["launcher_url"]).port  # an HTTP server in the driver's process
        on_launcher = [e for e in sockets["host0"] if e["port"] == launcher]
        assert on_launcher and {e["address"] for e in on_launcher} == {"127.0.0.1"}, on_launcher
        assert {e["pid"] for e in on_launcher} == {agent.proc.host_pid}
        for h in hosts[1:]:  # worker hosts: no dashboard, no launcher
            assert not [e for e in sockets[h.name] if "dashboard.py" in e["process"] and "agent" not in e["process"]]
        gcs = _tokenless(rig[1], TOKENLESS_GCS, started["address"])
        client = _tokenless(rig[3], TOKENLESS_CLIENT, started["client_address"])
        print(f"without the token, from host1 the GCS: {gcs}; from host3 the Ray Client server: {client}")
        assert gcs.startswith("REFUSED"), gcs
        assert client.startswith("REFUSED"), client
    finally:
        agent.call("shutdown")
    assert_nothing_left(hosts)


def test_a_worker_host_cut_off_for_30s_is_reported_unreachable_and_the_cluster_is_whole_again(cluster, rig):
    """Host2's link goes down for 30 s. The driver names the unreachable node; work on host1 goes
    on; once the link is back the node returns (its task starts it again when Ray had declared it
    dead) and work runs on both hosts. Before: the node's supervisor took 10 s of silence for a
    lost head, the task ended as if the cluster were shutting down, and the node never came back."""
    agent = cluster["agent"]
    both = sorted([rig[1].ip, rig[2].ip])
    agent.call("setup", max_worker_nodes=2, num_cpus_worker_node=2)
    cut = False
    try:
        wait_status(agent, lambda s: s["worker_ips"] == both, "two worker nodes", 60)
        rig[2].link_down()
        cut, t_cut = True, time.monotonic()
        detected, status = wait_status(
            agent, lambda s: s["worker_ips"] == [rig[1].ip]
            and rig[2].ip in [d["host"] for d in s["status"]["dead_worker_nodes"]], "node loss seen", 60)
        log.info("host2 cut off: the driver saw its node go after %.1fs: %s", detected, status)
        assert status["status"]["degraded"] is True, status
        meanwhile = agent.call("work_on", ip=rig[1].ip, tasks=8)
        assert meanwhile["results"] == [i * i for i in range(8)]
        time.sleep(max(0.0, 30 - (time.monotonic() - t_cut)))
        rig[2].link_up()
        cut, t_up = False, time.monotonic()
        recovered, status = wait_status(agent, lambda s: s["worker_ips"] == both and not s["status"]["degraded"],
                                         "both worker nodes back", 180)
        log.info("link back: the cluster was whole again %.1fs later: %s", recovered, status)
        print(f"partition of host2: detected after {detected:.1f}s; whole again {recovered:.1f}s after the link "
              f"returned ({time.monotonic() - t_cut:.1f}s after the cut)")
        work = agent.call("work_across_nodes", mib=1)
        assert work["task_ips"] == both
        log_text = Path(agent.log_path).read_text(errors="replace")
        assert f"{rig[2].ip}) is unreachable" in log_text, "the driver must name the unreachable node's host"
        assert t_up > t_cut
    finally:
        if cut:
            rig[2].link_up()
        agent.call("shutdown")
    assert_nothing_left(cluster["hosts"])
