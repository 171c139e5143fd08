"""Ray on Spark against a real Spark standalone cluster (2 workers x 1 core, 2 GiB)."""

from __future__ import annotations

import logging
import os
import shutil
import time

import pytest
import ray

import ray_on_spark
from helpers import active_spark_jobs, ray_processes
from ray_on_spark import spark_env
from ray_on_spark.on_spark import resources
from ray_on_spark.runtime.host import host_memory_bytes, shm_bytes


def _footprint(sc) -> int:
    m = spark_env.executor_memory(sc)
    return resources.executor_footprint_bytes(m.heap, m.overhead, m.overhead_factor, m.pyspark)


def _expected_share(sc) -> resources.MemoryShare:
    """What each worker node must get on this host: both executors and both nodes share it."""
    head = resources.head_memory(0, None, None)
    host = resources.HostView(
        total_memory=host_memory_bytes(),
        shm_bytes=shm_bytes(),
        num_ray_worker_nodes=2,
        num_executors=2,
        reserved_bytes=head.total_bytes + spark_env.driver_memory(sc),
    )
    return resources.worker_memory_share(host, _footprint(sc))


def test_setup_connects_runs_on_both_nodes_and_shutdown_leaves_nothing(spark, no_ray_left):
    address, remote = ray_on_spark.setup_ray_cluster(
        max_worker_nodes=2, num_cpus_worker_node=1, num_gpus_worker_node=0
    )
    try:
        assert os.environ["RAY_ADDRESS"] == address
        assert remote.startswith("ray://")
        ray.init()  # no address: RAY_ADDRESS points at the new cluster
        nodes = [n for n in ray.nodes() if n["Alive"]]
        workers = [n for n in nodes if "node:__internal_head__" not in n["Resources"]]
        assert len(workers) == 2
        expected = _expected_share(spark.sparkContext)
        for n in workers:
            assert n["Resources"]["CPU"] == 1.0
            assert n["Resources"].get("GPU", 0) == 0
            assert n["Resources"]["memory"] == pytest.approx(expected.heap_bytes, rel=0.01)
            assert n["Resources"]["object_store_memory"] == pytest.approx(expected.object_store_bytes, rel=0.01)
        # the Ray nodes plus the executors never exceed the host
        host_total = host_memory_bytes()
        used = 2 * expected.total_bytes + 2 * _footprint(spark.sparkContext)
        assert used <= host_total

        @ray.remote(num_cpus=1)
        def where(i):
            import time

            time.sleep(0.5)
            return ray.get_runtime_context().get_node_id()

        ran_on = set(ray.get([where.remote(i) for i in range(6)]))
        assert ran_on == {n["NodeID"] for n in workers}
        assert active_spark_jobs(spark.sparkContext)  # the barrier job holds the nodes
    finally:
        ray_on_spark.shutdown_ray_cluster()
    assert not ray.is_initialized()
    assert "RAY_ADDRESS" not in os.environ
    assert active_spark_jobs(spark.sparkContext) == []
    assert ray_on_spark.active_cluster() is None


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_setup_twice_refuses_and_setup_after_shutdown_works(spark, no_ray_left):
    ray_on_spark.setup_ray_cluster(max_worker_nodes=2)
    try:
        before = ray_processes()
        with pytest.raises(ray_on_spark.RayOnSparkError, match="already running"):
            ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
        assert ray_processes() == before  # the refused call started nothing
    finally:
        ray_on_spark.shutdown_ray_cluster()
    ray_on_spark.shutdown_ray_cluster()  # idempotent
    address, _ = ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
    try:
        ray.init()
        assert ray.get(ray.remote(lambda: 42).remote()) == 42
    finally:
        ray_on_spark.shutdown_ray_cluster()


def test_context_manager_owns_the_cluster(spark, no_ray_left):
    with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
        assert ray_on_spark.active_cluster() is cluster
        assert cluster.dashboard_url.startswith("http://127.0.0.1:")
        assert len(cluster.worker_nodes()) == 2
        ray.init(address=cluster.address)
        assert ray.cluster_resources()["CPU"] == 2.0
    assert cluster.state == "stopped"
    assert ray_on_spark.active_cluster() is None
    assert not os.path.exists(cluster.temp_dir)


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_worker_that_cannot_start_fails_setup_fast_with_its_error(spark, no_ray_left):
    import time

    t0 = time.monotonic()
    with pytest.raises(ray_on_spark.RayOnSparkError) as err:
        ray_on_spark.setup_ray_cluster(max_worker_nodes=2, worker_node_options={"object_manager_port": "notaport"})
    assert time.monotonic() - t0 < 60
    assert "notaport" in str(err.value)  # ray start's own complaint reaches the user
    assert ray_on_spark.active_cluster() is None
    assert active_spark_jobs(spark.sparkContext) == []


def test_max_num_worker_nodes_uses_every_slot(spark, no_ray_left):
    with ray_on_spark.ray_cluster(max_worker_nodes=ray_on_spark.MAX_NUM_WORKER_NODES) as cluster:
        assert len(cluster.worker_nodes()) == 2


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_secure_defaults_dashboard_on_loopback_private_dirs_and_token_auth(spark, no_ray_left):
    """Dashboard on 127.0.0.1, temp dirs 0700, and a client without the cluster's token is refused."""
    import glob
    import stat
    import subprocess
    import sys

    import psutil

    with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
        port = int(cluster.dashboard_url.rsplit(":", 1)[1])
        listeners = [c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port]
        assert listeners and set(listeners) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listeners
        # Workers' dirs are ros-<id>-w<partition>-<random>; the head's is ros-<id>-<random>,
        # whose random part may itself start with "w".
        dirs = [cluster.temp_dir] + glob.glob(f"/tmp/ros-{cluster.cluster_id}-w[0-9]*-*")
        assert len(dirs) == 3
        assert all(stat.S_IMODE(os.stat(d).st_mode) == 0o700 for d in dirs), dirs
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        probe = (
            "from ray._raylet import GcsClient\n"
            "try:\n"
            f"    GcsClient(address='{cluster.address}').get_all_node_info(timeout=3); print('ACCEPTED')\n"
            "except Exception as e:\n"
            "    print('REFUSED', e)\n"
        )
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "REFUSED" in out and "InvalidAuthToken" in out, out
        ray.init()  # the driver holds the cluster's token
        assert ray.get(ray.remote(lambda: "ok").remote()) == "ok"


def _raylet_of(cluster, partition: str):
    import psutil

    from ray_on_spark.on_spark.ray_start import LABEL_PARTITION, LABEL_PID

    node = [n for n in cluster.worker_nodes() if n.labels[LABEL_PARTITION] == partition][0]
    sup = psutil.Process(int(node.labels[LABEL_PID]))
    return node, [p for p in sup.children(recursive=True) if p.name() == "raylet"][0]


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_dead_worker_node_is_restarted_in_its_slot_and_the_other_node_is_undisturbed(spark, no_ray_left, caplog):
    import logging
    import time

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ray_on_spark.on_spark.ray_start import LABEL_PARTITION

    caplog.set_level(logging.WARNING, logger="ray_on_spark")
    with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
        ray.init()
        node0, raylet = _raylet_of(cluster, "0")
        node1 = [n for n in cluster.worker_nodes() if n.labels[LABEL_PARTITION] == "1"][0]

        @ray.remote(num_cpus=1)
        def steady(seconds):
            time.sleep(seconds)
            return ray.get_runtime_context().get_node_id()

        running = steady.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node1.node_id, soft=False)).remote(8)
        t0 = time.monotonic()
        raylet.kill()
        deadline = t0 + 60
        while True:
            nodes = {n.labels[LABEL_PARTITION]: n for n in cluster.worker_nodes()}
            if "0" in nodes and nodes["0"].node_id != node0.node_id:
                break
            assert time.monotonic() < deadline, "partition 0's node was not restarted"
            time.sleep(0.1)
        restarted_after = time.monotonic() - t0
        assert ray.get(running) == node1.node_id  # work on the other node was not disturbed
        assert len(cluster.worker_nodes()) == 2 and not cluster.status()["degraded"]
        assert ray.get(steady.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            nodes["0"].node_id, soft=False)).remote(0)) == nodes["0"].node_id
        assert any(node0.node_id[:12] in r.getMessage() and "partition 0" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING), [r.getMessage() for r in caplog.records]
        print(f"node restarted in its slot {restarted_after:.1f}s after its raylet was killed")


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_node_that_keeps_dying_fails_its_task_visibly_and_the_cluster_heals_once(spark, no_ray_left, caplog):
    import logging
    import time

    from ray_on_spark.on_spark.ray_start import LABEL_PARTITION

    caplog.set_level(logging.WARNING, logger="ray_on_spark")
    with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
        max_restarts = cluster.worker.max_restarts
        for death in range(max_restarts + 1):
            node, raylet = _raylet_of(cluster, "0")
            raylet.kill()
            deadline = time.monotonic() + 60
            while death < max_restarts:  # wait for the restart, except after the last death
                nodes = {n.labels[LABEL_PARTITION]: n for n in cluster.worker_nodes()}
                if "0" in nodes and nodes["0"].node_id != node.node_id:
                    break
                assert time.monotonic() < deadline, f"no restart after death {death + 1}"
                time.sleep(0.1)
        deadline = time.monotonic() + 60
        while not any(r.levelno == logging.ERROR and "died 4 times" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, [r.getMessage()[:200] for r in caplog.records]
            time.sleep(0.2)
        # The task failed instead of looping; the cluster then heals once by resubmitting its job.
        deadline = time.monotonic() + 120
        while cluster.status()["health"] != "ready":
            assert time.monotonic() < deadline, cluster.status()
            time.sleep(0.2)
        assert cluster.status()["resubmits"] == 1


def test_lost_executor_degrades_the_cluster_and_it_heals_back_to_all_its_nodes(spark, no_ray_left, caplog):
    """Barrier semantics: losing an executor fails the barrier ResultStage, so Spark ends every
    task of the job and all worker nodes leave (the head stays): status() says degraded and the
    driver logs why. Spark's standalone worker relaunches the executor; the cluster submits its
    job again once Spark has the slots (healing) and is back to every node (ready). Work
    submitted meanwhile completes: Ray retries it on the new nodes."""
    import logging
    import time

    import psutil
    import ray

    from ray_on_spark.on_spark.ray_start import LABEL_PARTITION, LABEL_PID

    caplog.set_level(logging.WARNING, logger="ray_on_spark")
    with ray_on_spark.ray_cluster(max_worker_nodes=2) as cluster:
        ray.init()

        @ray.remote(num_cpus=1, max_retries=10)
        def square(x: int) -> int:
            time.sleep(0.5)
            return x * x

        node0 = [n for n in cluster.worker_nodes() if n.labels[LABEL_PARTITION] == "0"][0]
        executor = [p for p in psutil.Process(int(node0.labels[LABEL_PID])).parents() if p.name() == "java"][0]
        t0 = time.monotonic()
        executor.kill()
        refs = [square.remote(i) for i in range(8)]  # submitted while the cluster loses its nodes
        seen, status = [], cluster.status()
        left_after = None
        deadline = t0 + 240
        while time.monotonic() < deadline:
            status = cluster.status()
            if left_after is None and node0.node_id not in {n.node_id for n in cluster.worker_nodes()}:
                left_after = time.monotonic() - t0
            if not seen or seen[-1] != status["health"]:
                seen.append(status["health"])
            if status["health"] == "ready" and len(seen) > 1:
                break
            time.sleep(0.2)
        healed_after = time.monotonic() - t0
        print(f"executor killed: its node left after {left_after:.1f}s; all {status['alive_worker_nodes']} nodes "
              f"back after {healed_after:.1f}s; health {' -> '.join(seen)}; resubmits {status['resubmits']}")
        assert left_after is not None, "the lost executor's node stayed in the cluster"
        assert seen[-3:] == ["degraded", "healing", "ready"], seen
        # one job for both nodes, or -- when the executor took over 15 s to come back -- one for the
        # slot Spark had, then one more when the other returned
        assert status["alive_worker_nodes"] == 2 and status["resubmits"] in (1, 2), status
        assert any(r.levelno == logging.ERROR and "lost its Spark job" in r.getMessage() for r in caplog.records)
        assert sum(ray.get(refs, timeout=120)) == sum(i * i for i in range(8))
        ray.shutdown()


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        (dict(max_worker_nodes=2, num_cpus_worker_node=2), "num_cpus_worker_node=2 is more than an executor"),
        (dict(max_worker_nodes=2, num_cpus_worker_node=1, num_gpus_worker_node=1), "num_gpus_worker_node=1"),
        (dict(max_worker_nodes=3), "max_worker_nodes=3"),
    ],
)
def test_requests_the_spark_cluster_cannot_meet_are_refused_before_start(spark, kwargs, expected):
    import time

    before = ray_processes()
    t0 = time.monotonic()
    with pytest.raises(ValueError) as err:
        ray_on_spark.setup_ray_cluster(**kwargs)
    assert time.monotonic() - t0 < 1.0
    assert expected in str(err.value)
    assert ray_processes() == before


def test_dataframe_and_dataset_convert_both_ways_through_the_object_store(spark, no_ray_left, caplog, tmp_path):
    """Ray on Spark mode: one worker node, so one Spark slot stays free for the conversion jobs."""
    import gc

    from ray_on_spark.data import lifetimes

    ray_on_spark.setup_ray_cluster(max_worker_nodes=1, num_cpus_worker_node=1)
    try:
        ray.init()
        df = spark.range(30000, numPartitions=3).selectExpr("id AS a", "CAST(id AS STRING) AS s")
        with caplog.at_level(logging.DEBUG, logger="ray_on_spark.data"):
            ds = ray_on_spark.from_spark(df)
        assert "via Arrow files" in caplog.text  # the executors' JVMs wrote the blocks' files
        assert ds.count() == 30000
        assert ds.sum("a") == 29999 * 30000 // 2
        doubled = ds.map_batches(lambda b: {"a": b["a"] * 2, "s": b["s"]})  # lazy: runs on the Ray node
        back = ray_on_spark.to_spark(doubled, spark)
        assert [(f.name, f.dataType) for f in back.schema] == [(f.name, f.dataType) for f in df.schema]
        assert back.selectExpr("sum(a)", "count(DISTINCT s)").first()[:] == (29999 * 30000, 30000)
        df.write.parquet(str(tmp_path / "t"))  # a columnar source: copied column by column
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="ray_on_spark"):
            from_parquet = ray_on_spark.from_spark(spark.read.parquet(str(tmp_path / "t")))
        assert "columnar source" in caplog.text
        assert from_parquet.sum("a") == 29999 * 30000 // 2
        # Ray's own entry points (which import raydp, not installed here) go through ours too
        through_ray = ray.data.from_spark(df, override_num_blocks=2)
        assert through_ray.count() == 30000 and through_ray.to_spark(spark).count() == 30000
    finally:
        ray_on_spark.shutdown_ray_cluster()
    # to_spark's blocks are released by a background sweeper; once the cluster is gone it must not
    # call Ray: Ray's actor calls run ray.init() themselves, and in CI the sweeper started a local
    # Ray on the driver in the middle of the next test's setup.
    assert not ray.is_initialized()
    del back
    gc.collect()
    deadline = time.monotonic() + 60
    while lifetimes.TRACKER.tracked() and time.monotonic() < deadline:
        lifetimes.TRACKER.sweep(collect=True)  # what its thread does every 10 s
        time.sleep(0.5)
    assert lifetimes.TRACKER.tracked() == 0, "the JVM kept the dropped DataFrames' broadcasts"
    assert not ray.is_initialized(), "releasing a conversion of a stopped cluster started a new Ray"
    # A new cluster in the same Spark application: the executors' Python workers that were
    # connected to the old cluster must not stand in the way of the new one.
    ray_on_spark.setup_ray_cluster(max_worker_nodes=1, num_cpus_worker_node=1)
    try:
        ray.init()
        assert ray_on_spark.from_spark(df).sum("a") == 29999 * 30000 // 2
    finally:
        ray_on_spark.shutdown_ray_cluster()


def test_conversion_with_every_slot_held_by_worker_nodes_is_refused_at_once_naming_the_fix(spark, no_ray_left):
    """Both Spark slots hold Ray worker nodes: a conversion's Spark job could never start, and used
    to wait for ever. It is refused before any Spark job, saying how to leave a slot free."""
    from ray_on_spark.errors import NoFreeSparkSlotsError

    sc = spark.sparkContext
    with ray_on_spark.ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1):
        ray.init()
        jobs = active_spark_jobs(sc)  # the worker nodes' barrier job
        t0 = time.monotonic()
        with pytest.raises(NoFreeSparkSlotsError, match=r"max_worker_nodes=1") as refused:
            ray_on_spark.from_spark(spark.range(10))
        with pytest.raises(NoFreeSparkSlotsError, match=r"Leave a Spark slot free"):
            ray_on_spark.to_spark(ray.data.range(10), spark)
        assert time.monotonic() - t0 < 10
        assert "from_spark" in str(refused.value) and "2 core(s)" in str(refused.value)
        assert active_spark_jobs(sc) == jobs  # nothing was submitted


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_collect_log_to_path_gets_every_nodes_logs_after_shutdown(spark, no_ray_left, tmp_path):
    logs = tmp_path / "ray_logs"
    ray_on_spark.setup_ray_cluster(max_worker_nodes=2, num_cpus_worker_node=1, collect_log_to_path=str(logs))
    cluster_id = ray_on_spark.active_cluster().cluster_id
    ray_on_spark.shutdown_ray_cluster()
    dirs = sorted(p.name for p in logs.iterdir())
    heads = [d for d in dirs if d.startswith(f"ray-head-{cluster_id}-")]
    workers = [d for d in dirs if d.startswith(f"ray-worker-{cluster_id}-p")]
    assert len(heads) == 1 and len(workers) == 2, dirs
    assert any(f.name.startswith("gcs_server") for f in (logs / heads[0]).iterdir())
    for w in workers:
        names = [f.name for f in (logs / w).iterdir()]
        assert any(n.startswith("raylet") for n in names), names
        assert "ray-start.log" in names


def test_head_and_worker_options_reach_ray_start_and_temp_root_is_used(spark, no_ray_left):
    import tempfile

    import ray

    from ray_on_spark.runtime.units import MIB

    root = tempfile.mkdtemp(prefix="r", dir="/tmp")  # 14 characters: Ray's socket paths live below it
    try:
        with ray_on_spark.ray_cluster(
            max_worker_nodes=2, num_cpus_head_node=1, memory_head_node=512 * MIB,
            object_store_memory_head_node=100 * MIB, head_node_options={"resources": '{"head_marker": 2}'},
            worker_node_options={"resources": {"worker_marker": 1}}, ray_temp_root_dir=root,
        ) as cluster:
            assert [n for n in os.listdir(root) if n.startswith(f"ros-{cluster.cluster_id}-")]  # head's and nodes' dirs
            ray.init()
            nodes = [n for n in ray.nodes() if n["Alive"]]
            head = [n["Resources"] for n in nodes if "node:__internal_head__" in n["Resources"]][0]
            workers = [n["Resources"] for n in nodes if "node:__internal_head__" not in n["Resources"]]
            ray.shutdown()
        assert head["CPU"] == 1 and head["memory"] == 512 * MIB and head["head_marker"] == 2
        assert abs(head["object_store_memory"] - 100 * MIB) < MIB
        assert len(workers) == 2 and all(w["worker_marker"] == 1 and w["CPU"] == 1 for w in workers), workers
        assert os.listdir(root) == []  # every temp dir removed at shutdown
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.any_spark  # Ray processes and their lifecycle
def test_strict_mode_refuses_nodes_below_ray_recommendation_and_leaves_nothing(spark, no_ray_left):
    t0 = time.monotonic()
    with pytest.raises(ray_on_spark.RayOnSparkError, match="strict_mode=True") as err:
        ray_on_spark.setup_ray_cluster(max_worker_nodes=2, strict_mode=True)
    assert "strict_mode=False" in str(err.value)  # names the way out
    assert time.monotonic() - t0 < 60
    assert ray_on_spark.active_cluster() is None


def test_shutdown_after_the_users_ray_shutdown_with_converted_data_is_clean(spark, no_ray_left):
    """A notebook's last cell often reads `ray.shutdown(); shutdown_ray_cluster()` after a conversion."""
    ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
    ray.init()
    assert ray_on_spark.from_spark(spark.range(100)).count() == 100
    ray.shutdown()
    ray_on_spark.shutdown_ray_cluster()  # the holder goes with its cluster; no reconnect, no error
    assert not ray.is_initialized() and ray_on_spark.active_cluster() is None
