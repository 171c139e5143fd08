"""Losing a whole worker host under a Ray-on-Spark cluster, on a rig of its own (the lost host
cannot come back, so the shared rig is not used): master and driver on host0, Spark workers of
3 cores on host1 and host2, worker nodes of 2 CPUs (one per host), host3 spare.

Killing every process of host2 ends its executor, and with it Spark's whole barrier stage: the
node on host1 goes too. The driver must see it within 15 s (status degraded, naming host2); the
cluster heals to as many nodes as Spark can place now (one, on host1) and back to both when a
host's slots return (a Spark worker on host3). Before, the cluster waited for every slot and
stayed empty. Shutdown leaves nothing on the survivors.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator

import pytest

from .agent import Agent
from .checks import assert_nothing_left, wait_status
from .rig import HostRig
from .spark_hosts import SparkOnHosts, host_env

log = logging.getLogger(__name__)

REPO = str(Path(__file__).resolve().parents[2])
SUBNET = "203.0.113.0/24"  # TEST-NET-3: apart from the shared rig's

pytestmark = pytest.mark.any_spark


@pytest.fixture
def lossy(tmp_path) -> Iterator[dict]:
    with HostRig(4, subnet=SUBNET) as rig:
        spark = SparkOnHosts(rig[0], str(tmp_path), REPO).start()
        agent = None
        try:
            for h in (rig[1], rig[2]):
                spark.add_worker(h, cores=3)
            agent = Agent(rig[0], str(tmp_path / "driver.log"), host_env(rig[0]), REPO)
            agent.call("start_spark", master=spark.url, host=rig[0].ip)
            agent.call("wait_executors", count=6)
            yield {"rig": rig, "spark": spark, "agent": agent}
            agent.call("stop_spark")
        finally:
            if agent is not None:
                agent.close()
            spark.stop()
        for h in rig:
            if h.alive:
                assert h.pids() == [h.init_pid], f"{h.name} still runs {h.pids()}"


def test_a_lost_host_is_seen_within_15s_and_the_cluster_heals_to_the_slots_left_then_back(lossy):
    rig, agent, spark = lossy["rig"], lossy["agent"], lossy["spark"]
    agent.call("setup", max_worker_nodes=2, num_cpus_worker_node=2)
    try:
        wait_status(agent, lambda s: s["worker_ips"] == [rig[1].ip, rig[2].ip], "two worker nodes", 60)
        t0 = time.monotonic()
        rig[2].kill_all()
        seen, status = wait_status(
            agent, lambda s: s["status"]["degraded"] and rig[2].ip in [d["host"] for d in s["status"]["dead_worker_nodes"]],
            "host2's node seen lost", 60)
        log.info("host2 lost: seen after %.1fs: %s", seen, status)
        assert seen < 15, f"the driver took {seen:.1f}s to see host2 go"
        partial, status = wait_status(agent, lambda s: s["worker_ips"] == [rig[1].ip] and s["status"]["health"] == "degraded"
                                       and s["status"]["resubmits"] >= 1, "a node back on host1", 120)
        partial_at = time.monotonic() - t0
        log.info("healed to the slots left %.1fs after the loss: %s", partial_at, status)
        work = agent.call("work_on", ip=rig[1].ip, tasks=4)
        assert work["results"] == [0, 1, 4, 9]
        t1 = time.monotonic()
        spark.add_worker(rig[3], cores=3)  # slots return (on another host)
        back, status = wait_status(agent, lambda s: s["worker_ips"] == [rig[1].ip, rig[3].ip]
                                    and s["status"]["health"] == "ready", "both nodes back", 180)
        print(f"host lost: seen after {seen:.1f}s; one node back (the slots left) after {partial_at:.1f}s; "
              f"both back {time.monotonic() - t1:.1f}s after a new host's worker joined; status {status['status']}")
        assert agent.call("work_across_nodes", mib=1)["task_ips"] == [rig[1].ip, rig[3].ip]
        driver_log = Path(agent.log_path).read_text(errors="replace")
        assert f"{rig[2].ip}) is unreachable" in driver_log
    finally:
        agent.call("shutdown")
    assert_nothing_left([rig[0], rig[1], rig[3]])
