"""Spark on Ray (RayDP mode) on a real local Ray and real Spark JVMs.

One Ray (``ray.init(num_cpus=3)``) for the module and one ``init_spark`` session that
the tests share; the last test kills an actor and stops the session, then checks that
everything is gone.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time

import psutil
import pytest

from helpers import ray_start_head, spark_jvms

ray = pytest.importorskip("ray")

NUM_CPUS = 3
USER_BACKEDGE = 300000  # a user's JIT option, which must win over ray_on_spark.on_ray.jit's


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=NUM_CPUS, object_store_memory=400 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    import ray_on_spark

    ray_on_spark.stop_spark()
    ray.shutdown()


@pytest.fixture(scope="module")
def before(local_ray):
    """Ray's free CPUs, placement groups and Spark JVMs before init_spark."""
    return {"cpu": ray.available_resources().get("CPU"), "jvms": spark_jvms(), "pgs": _live_pgs(), "dirs": _our_dirs()}


@pytest.fixture(scope="module")
def spark(before):
    import ray_on_spark

    session = ray_on_spark.init_spark(
        "ros-tests", num_executors=2, executor_cores=1, executor_memory="1GB",
        configs={"spark.sql.shuffle.partitions": "4",
                 "spark.executor.extraJavaOptions": f"-XX:Tier4BackEdgeThreshold={USER_BACKEDGE}"},
    )
    yield session
    ray_on_spark.stop_spark()


def _our_dirs() -> set:
    """The Spark-on-Ray temp dirs in /tmp (master's and executors')."""
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith(("ros-spark-m-", "ros-spark-w"))}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _live_pgs():
    return {k for k, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"}


def _executor_jvms(spark) -> set:
    """The pids of the executor JVMs that run 16 small Python tasks."""

    def executor_jvm_pid(_):  # defined here so that it is pickled by value, not by module
        import psutil

        for parent in psutil.Process().parents():
            if "java" in parent.name():
                yield parent.pid
                return

    return set(spark.sparkContext.parallelize(range(16), 16).mapPartitions(executor_jvm_pid).collect())


def test_dataframe_work_runs_on_exactly_num_executors_with_executor_cores(spark):
    sc = spark.sparkContext
    infos = [e for e in sc._jsc.sc().statusTracker().getExecutorInfos()]
    assert len(infos) == 3  # two executors and the driver
    assert sc.defaultParallelism == 2  # 2 executors x 1 core
    assert spark.conf.get("spark.executor.cores") == "1"
    assert spark.range(10**6).selectExpr("id % 7 AS k").groupBy("k").count().count() == 7
    jvms = _executor_jvms(spark)
    assert len(jvms) == 2


def test_executors_are_processes_of_their_ray_actors(spark):
    import ray_on_spark

    cluster = ray_on_spark.active_spark()
    actor_jvms = ray.get([a.jvm_pids.remote() for a in cluster.actors])
    actor_pids = [w["actor_pid"] for w in cluster.workers]
    jvms = _executor_jvms(spark)
    for pid in jvms:
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
        assert ancestors & set(actor_pids), f"executor JVM {pid} is not under a Ray actor"
        assert any(pid in pids for pids in actor_jvms)


def test_executor_jvms_defer_c2_and_the_users_java_options_win(spark):
    from ray_on_spark.on_ray import jit

    for pid in _executor_jvms(spark):
        cmd = psutil.Process(pid).cmdline()
        for option in jit.TIER4_THRESHOLDS:
            assert option in cmd, (option, cmd)
        # HotSpot takes an option's last occurrence: the user's comes after ours.
        ours = cmd.index("-XX:Tier4BackEdgeThreshold=400000")
        assert cmd.index(f"-XX:Tier4BackEdgeThreshold={USER_BACKEDGE}") > ours, cmd


def test_ray_reserves_each_executors_cpus_and_memory(spark, before):
    import ray_on_spark

    avail = ray.available_resources()
    assert avail.get("CPU") == before["cpu"] - 2
    assert len(_live_pgs() - before["pgs"]) == 1
    cluster = ray_on_spark.active_spark()
    assert cluster.plan.bundles() == [{"CPU": 1.0, "memory": float(2**30)}] * 2


def test_second_init_spark_is_refused_while_one_runs(spark):
    import ray_on_spark

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"already running; call ray_on_spark.stop_spark\(\) first"):
        ray_on_spark.init_spark("again", 1, 1, "1GB")
    assert time.monotonic() - t0 < 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_executors=0), r"num_executors=0 must be >= 1, e.g. num_executors=2"),
        (dict(executor_cores=8), r"more than any Ray node has|this Ray cluster has 3 CPUs in all"),
        (dict(num_executors=5), r"= 5 CPUs, but this Ray cluster has 3 CPUs in all; use num_executors<=3"),
        (dict(executor_memory="lots"), r"executor_memory='lots' is not a memory size.*executor_memory='1GB'"),
        (dict(executor_memory="100MB"), r"below Spark's minimum of 450.00 MiB"),
        (dict(executor_memory="900GB"), r"this Ray cluster has .* of memory to give"),
        (dict(configs={"spark.executor.cores": "2"}), r"use init_spark's argument executor_cores instead"),
        (dict(placement_group_strategy="WIDE"), r"use one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
    ],
)
def test_bad_input_is_refused_before_anything_starts(local_ray, kwargs, message):
    import ray_on_spark

    args = dict(app_name="bad", num_executors=1, executor_cores=1, executor_memory="1GB")
    args.update(kwargs)
    cpu, jvms, pgs = ray.available_resources().get("CPU"), spark_jvms(), _live_pgs()
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=message):
        ray_on_spark.init_spark(**args)
    assert time.monotonic() - t0 < 1
    assert ray.available_resources().get("CPU") == cpu
    assert not spark_jvms() - jvms
    assert _live_pgs() == pgs
    assert ray_on_spark.active_spark() is None or ray_on_spark.active_spark().plan.app_name != "bad"


def test_a_lost_executor_is_replaced_and_stop_spark_cleans_up(spark, before):
    """Last in the module: it ends the shared session.

    Killing an executor's actor (as a node loss or ``ray.kill`` does) and SIGKILLing an
    executor's JVM (as the OOM killer does): each time a new executor actor starts on the
    same bundle and registers, a job running meanwhile completes through Spark's task
    retries, and the next job has ``num_executors`` executors again.
    """
    import signal
    import threading

    import ray_on_spark

    cluster = ray_on_spark.active_spark()
    victim = cluster.actors[0]
    victim_jvms = ray.get(victim.jvm_pids.remote())
    assert len(victim_jvms) == 1  # its executor JVM
    result = {}
    job = threading.Thread(target=lambda: result.update(n=spark.range(0, 4_000_000, numPartitions=40)
                                                        .selectExpr("sum(id % 7) AS s").first()["s"]))
    job.start()
    time.sleep(0.5)
    killed = time.monotonic()
    ray.kill(victim, no_restart=True)
    deadline = time.monotonic() + 60
    while len(cluster.replacements) < 1:
        assert time.monotonic() < deadline, "the lost executor was not replaced"
        time.sleep(0.1)
    kill_to_registered = time.monotonic() - killed
    job.join(60)
    assert result.get("n") == sum(i % 7 for i in range(4_000_000))  # the running job completed
    first = cluster.replacements[0]
    assert (first.lost_executor, first.new_executor) == (0, 2) and "actor died" in first.reason
    logging.getLogger(__name__).info("actor killed -> replacement registered: %.1fs (%.1fs after the loss was seen)",
                                     kill_to_registered, first.seconds)
    poll_deadline = time.monotonic() + 20  # its block manager registers a moment after the executor
    while cluster.executor_count() != 2:
        assert time.monotonic() < poll_deadline
        time.sleep(0.1)
    assert cluster.actors[0] is not victim
    while [p for p in victim_jvms if _running(p)]:
        assert time.monotonic() < deadline, "the killed actor's Spark JVMs are still running"
        time.sleep(0.1)
    assert spark.sparkContext.parallelize(range(8), 8).map(lambda x: x).count() == 8

    (jvm,) = ray.get(cluster.actors[1].jvm_pids.remote())
    killed = time.monotonic()
    os.kill(jvm, signal.SIGKILL)  # the OOM killer's way: the actor lives, its JVM is gone
    while len(cluster.replacements) < 2:
        assert time.monotonic() < deadline + 60, "the executor whose JVM was killed was not replaced"
        time.sleep(0.1)
    kill_to_registered = time.monotonic() - killed
    second = cluster.replacements[1]
    assert (second.lost_executor, second.new_executor) == (1, 3) and "JVM exited" in second.reason
    logging.getLogger(__name__).info("JVM killed -> replacement registered: %.1fs (%.1fs after the loss was seen)",
                                     kill_to_registered, second.seconds)
    poll_deadline = time.monotonic() + 20
    while cluster.executor_count() != 2:
        assert time.monotonic() < poll_deadline
        time.sleep(0.1)
    assert spark.range(1000).count() == 1000 and cluster.executor_failure is None

    ray_on_spark.stop_spark()
    assert ray_on_spark.active_spark() is None
    # stop_spark returns once Ray gives the resources back (a probe, not a sleep).
    assert ray.available_resources().get("CPU") == before["cpu"]
    assert _live_pgs() == before["pgs"]
    assert not spark_jvms() - before["jvms"], "a Spark JVM of init_spark is still running"
    assert not _our_dirs() - before["dirs"]


@pytest.mark.any_spark  # Ray-level: a `ray start` cluster's address; init_spark's Spark side runs on both
def test_init_spark_against_an_existing_ray_cluster_address(tmp_path):
    """Separate drivers connect to a Ray head started with ``ray start`` (given by address)."""
    import subprocess

    # The cluster uses Ray's token authentication; the driver gets the token from its env.
    with ray_start_head(tmp_path, num_cpus=2) as (address, env):
        script = f"""
import ray, ray_on_spark
ray.init(address="{address}", log_to_driver=False)
cpu = ray.available_resources()["CPU"]
spark = ray_on_spark.init_spark("remote", 1, 1, "600MB")
assert ray.available_resources()["CPU"] == cpu - 1
print("COUNT", spark.range(12345).count())
ray_on_spark.stop_spark()
print("CPU_BACK", ray.available_resources()["CPU"] == cpu)
"""
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                             cwd=str(tmp_path), env=env)
        assert "COUNT 12345" in out.stdout, out.stderr[-3000:]
        assert "CPU_BACK True" in out.stdout

        # A driver that dies (SIGKILL) mid-session leaves nothing in the shared cluster:
        # its executors, their actors and the converted data's owners all go.
        jvms_before, dirs_before = spark_jvms(), _our_dirs()
        victim = subprocess.Popen([sys.executable, "-c", f"""
import ray, ray_on_spark, time
ray.init(address="{address}", log_to_driver=False)
spark = ray_on_spark.init_spark("doomed", 1, 1, "600MB")
ds = ray_on_spark.from_spark(spark.range(300000).selectExpr("id AS a"))
print("UP", ds.count(), flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True, cwd=str(tmp_path), env=env)
        assert victim.stdout.readline().strip() == "UP 300000"
        assert spark_jvms() - jvms_before  # its executor runs
        actors = ("ray::ExecutorActor", "ray::DataHolder", "ray::BlockOwner")

        def actor_processes():
            found = set()
            for p in psutil.process_iter(["cmdline", "status"]):
                cmd = " ".join(p.info["cmdline"] or [])
                found |= {a for a in actors if a in cmd and p.info["status"] != psutil.STATUS_ZOMBIE}
            return found

        assert actor_processes() == set(actors)  # the actors the check below expects gone
        victim.kill()
        victim.wait(10)
        probe = f"""
import ray, time
ray.init(address="{address}", log_to_driver=False)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    named = ray.util.list_named_actors(all_namespaces=True)
    if not named and ray.available_resources().get("CPU") == 2.0:
        break
    time.sleep(0.2)
print("NAMED", named, "CPU", ray.available_resources().get("CPU"))
"""
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
        assert "NAMED [] CPU 2.0" in out.stdout, out.stdout + out.stderr[-2000:]
        deadline = time.monotonic() + 20
        while actor_processes():
            assert time.monotonic() < deadline, "an actor process of the dead driver is still running"
            time.sleep(0.1)
        deadline = time.monotonic() + 20
        while spark_jvms() - jvms_before or _our_dirs() - dirs_before:
            assert time.monotonic() < deadline, "the dead driver's executor JVM or temp dirs are still there"
            time.sleep(0.1)

