"""What RayDP's own tests (oap-project/raydp ``python/raydp/tests/test_spark_cluster.py``) expect of
``init_spark``, held against ours on a shared ``ray start`` cluster, as RayDP users run it.

Covered here: a session started from inside a Ray actor; two drivers with a session each on one
Ray cluster at the same time; a user's own placement group, with and without bundle indexes,
left to its owner. Covered elsewhere: fractional CPUs and custom resources per executor
(``test_spark_on_ray_resources.py``), ``ray.data.from_spark`` / ``Dataset.to_spark`` without RayDP
(``test_dataset.py``). Deliberately different: RayDP's ``test_spark_conf`` expects the driver to
bind the node's IP even when every Ray node is this host; ours binds loopback then (README,
"Spark on Ray"), and the node's IP when executors can be remote.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time

import pytest

from helpers import ray_processes, ray_start_head, spark_jvms, wait_no_new_ray_processes


@pytest.fixture(scope="module")
def shared_ray(tmp_path_factory):
    """A ``ray start --head`` cluster of 3 CPUs (token auth on), and the env its drivers need."""
    tmp = tmp_path_factory.mktemp("raydp-compat")
    baseline = ray_processes()
    with ray_start_head(tmp, num_cpus=3, prefix="rosc-") as (address, env):
        yield address, env, tmp
    assert not wait_no_new_ray_processes(baseline, timeout=30)


def _driver(address: str, body: str) -> str:
    return f"import ray, ray_on_spark\nray.init(address={address!r}, log_to_driver=False)\n{body}\nray.shutdown()\n"


def _run(script: str, env: dict, cwd, timeout: float = 240) -> str:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                         cwd=str(cwd), env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.mark.any_spark  # Ray-level: a driver inside an actor
def test_init_spark_inside_a_ray_actor_runs_jobs_and_stops(shared_ray):
    address, env, tmp = shared_ray
    jvms = spark_jvms()
    out = _run(_driver(address, """
@ray.remote(num_cpus=0)
class SparkDriver:
    def __init__(self):
        self.spark = ray_on_spark.init_spark("in-an-actor", 1, 1, "600MB")
    def run(self):
        return self.spark.range(0, 100).count()
    def stop(self):
        ray_on_spark.stop_spark()
        return ray.available_resources().get("CPU")
driver = SparkDriver.remote()
print("COUNT", ray.get(driver.run.remote()))
print("CPU_AFTER_STOP", ray.get(driver.stop.remote()))
"""), env, tmp)
    assert "COUNT 100" in out and "CPU_AFTER_STOP 3.0" in out, out
    assert not spark_jvms() - jvms


@pytest.mark.any_spark  # Ray-level: two drivers' sessions side by side
def test_two_drivers_each_with_a_session_on_one_ray_cluster_at_once(shared_ray):
    address, env, tmp = shared_ray
    script = _driver(address, """
import sys, time
spark = ray_on_spark.init_spark(f"driver-{sys.argv[1]}", 1, 1, "600MB")
open(sys.argv[2], "w").close()
while not __import__("os").path.exists(sys.argv[3]):  # both sessions are up at the same time
    time.sleep(0.1)
print("COUNT", spark.range(10).count(), flush=True)
ray_on_spark.stop_spark()
""")
    flags = [str(tmp / f"up-{i}") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), flags[i], flags[1 - i]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=str(tmp), env=env) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "COUNT 10" in out, err[-3000:]


@pytest.mark.any_spark  # Ray-level: placement groups
def test_a_users_placement_group_with_and_without_bundle_indexes_is_used_and_left_to_its_owner(shared_ray):
    address, env, tmp = shared_ray
    out = _run(_driver(address, """
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
pg = placement_group([{"CPU": 1, "memory": 600 * 2**20}, {"CPU": 1, "memory": 600 * 2**20}], strategy="PACK")
ray.get(pg.ready())
for kwargs in ({"placement_group_bundle_indexes": [1]}, {}):
    spark = ray_on_spark.init_spark("own-pg", 1, 1, "600MB", placement_group=pg, **kwargs)
    print("COUNT", spark.range(0, 10, numPartitions=10).count())
    ray_on_spark.stop_spark()
    print("PG_STATE", placement_group_table(pg)["state"])
remove_placement_group(pg)
live = [p for p in placement_group_table().values() if p["state"] != "REMOVED"]
print("LIVE_PGS", len(live))
"""), env, tmp)
    assert out.count("COUNT 10") == 2 and out.count("PG_STATE CREATED") == 2 and "LIVE_PGS 0" in out, out


@pytest.mark.any_spark  # Ray-level: placement-group waiting
def test_init_spark_waits_for_room_saying_so_and_gives_up_clearly_after_its_timeout(shared_ray):
    """Another actor holds every CPU: init_spark waits (logging what for) and starts once it is freed;
    with a short ``reserve_timeout_s`` it gives up with the fix and leaves no placement group."""
    address, env, tmp = shared_ray
    out = _run(_driver(address, """
import logging, threading, time
from ray.util.placement_group import placement_group_table
from ray_on_spark.errors import SparkOnRayStartError
logging.basicConfig(level=logging.INFO, format="LOG %(message)s")

@ray.remote(num_cpus=3)
class Hog:
    def ping(self):
        return True

hog = Hog.remote()
ray.get(hog.ping.remote())
t0 = time.monotonic()
try:
    ray_on_spark.init_spark("no-room", 1, 1, "600MB", reserve_timeout_s=2)
except SparkOnRayStartError as e:
    print("REFUSED_AFTER", round(time.monotonic() - t0), "|", e)
print("LIVE_PGS", len([p for p in placement_group_table().values() if p["state"] != "REMOVED"]))
threading.Timer(12, lambda: ray.kill(hog)).start()
t0 = time.monotonic()
spark = ray_on_spark.init_spark("waits", 1, 1, "600MB", reserve_timeout_s=120)
print("STARTED_AFTER", round(time.monotonic() - t0), "COUNT", spark.range(7).count())
ray_on_spark.stop_spark()
"""), env, tmp)
    refused = next(ln for ln in out.splitlines() if ln.startswith("REFUSED_AFTER"))
    assert "within 2s" in refused and "reserve_timeout_s=600" in refused and int(refused.split()[1]) <= 5, out
    assert "LIVE_PGS 0" in out
    started = next(ln for ln in out.splitlines() if ln.startswith("STARTED_AFTER"))
    assert 12 <= int(started.split()[1]) <= 60 and started.endswith("COUNT 7"), out


APP = """
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("ignored-name").getOrCreate()
n = int(sys.argv[1])
sc = spark.sparkContext
print("APP_COUNT", spark.range(n).count(), "EXECUTORS", sc._jsc.sc().getExecutorMemoryStatus().size() - 1, flush=True)
sys.exit(int(sys.argv[2]))
"""

JAVA_APP = """
import org.apache.spark.sql.SparkSession;

public class CountApp {
    public static void main(String[] args) {
        SparkSession spark = SparkSession.builder().getOrCreate();
        long n = spark.range(Long.parseLong(args[0])).count();
        System.out.println("JAVA_COUNT " + n);
        System.out.flush();
    }
}
"""

BUILD_JAR = """
import sys, zipfile
from pyspark import SparkContext
SparkContext._ensure_initialized()
compiler = SparkContext._jvm.org.codehaus.janino.SimpleCompiler()  # the compiler Spark ships: no JDK needed
compiler.cook(open(sys.argv[1]).read())
codes = compiler.getBytecodes()
with zipfile.ZipFile(sys.argv[2], "w") as z:
    for name in codes.keySet():
        z.writestr(name.replace(".", "/") + ".class", bytes(codes.get(name)))
"""


def test_submit_runs_a_pyspark_file_and_a_jar_with_executors_in_ray_and_returns_their_exit_status(shared_ray):
    address, env, tmp = shared_ray
    app = tmp / "count_app.py"
    app.write_text(APP)
    jvms = spark_jvms()
    submit = [sys.executable, "-m", "ray_on_spark", "submit", "--ray-address", address, "--num-executors", "2",
              "--executor-cores", "1", "--executor-memory", "600m", "--conf", "spark.sql.shuffle.partitions=4"]
    done = subprocess.run(submit + [str(app), "12345", "0"], capture_output=True, text=True, timeout=240, env=env,
                          cwd=str(tmp))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "APP_COUNT 12345 EXECUTORS 2" in done.stdout
    failed = subprocess.run(submit + [str(app), "10", "3"], capture_output=True, text=True, timeout=240, env=env,
                            cwd=str(tmp))
    assert failed.returncode == 3 and "APP_COUNT 10" in failed.stdout, failed.stderr[-3000:]

    (tmp / "CountApp.java").write_text(JAVA_APP)
    jar = tmp / "count-app.jar"
    subprocess.run([sys.executable, "-c", BUILD_JAR, str(tmp / "CountApp.java"), str(jar)], check=True, timeout=120,
                   capture_output=True)
    java = subprocess.run(submit + ["--class", "CountApp", str(jar), "4321"], capture_output=True, text=True,
                          timeout=240, env=env, cwd=str(tmp))
    assert java.returncode == 0 and "JAVA_COUNT 4321" in java.stdout, java.stderr[-3000:]
    logging.getLogger(__name__).info("submit output: %s", done.stdout.strip())
    assert not spark_jvms() - jvms  # every driver and executor JVM of the three runs is gone


@pytest.mark.any_spark  # argument checks before anything starts
def test_submit_refuses_a_jar_without_its_class_before_connecting(tmp_path):
    jar = tmp_path / "app.jar"
    jar.write_bytes(b"")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ray_on_spark", "submit", "--ray-address", "127.0.0.1:1", str(jar)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is a jar: name its main class with --class" in done.stderr, done.stderr
    assert time.monotonic() - t0 < 20  # refused before Ray: the address given does not exist


def _worker_node(address: str, env: dict, tmp, name: str) -> "tuple[subprocess.Popen, str]":
    """A second Ray node on this host (``ray start --address``, 1 CPU), under the supervisor; and its temp dir."""
    temp = tempfile.mkdtemp(prefix=f"rosw{name}-")
    node = subprocess.Popen(
        [sys.executable, "-m", "ray_on_spark.runtime.supervisor", "--log", str(tmp / f"worker-{name}.log"), "--",
         sys.executable, "-m", "ray.scripts.scripts", "start", "--block", f"--address={address}", "--num-cpus=1",
         f"--temp-dir={temp}", "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0"],
        stdout=subprocess.PIPE, text=True, start_new_session=True, env=env,
    )
    assert node.stdout.readline().strip() == "READY", (tmp / f"worker-{name}.log").read_text()[-3000:]
    return node, temp


@pytest.mark.any_spark  # Ray-level: node loss; the actor-kill and JVM-kill replacements run on both
def test_an_executor_whose_raylet_dies_is_replaced_once_ray_has_room_again(shared_ray):
    """SIGKILL the raylet of the node an executor runs on: Spark loses the executor, Ray places its
    bundle again on the next node that joins (STRICT_SPREAD: not beside the other executor), and the
    replacement registers; a job then runs on two executors again."""
    import shutil

    import psutil

    address, env, tmp = shared_ray
    first, first_temp = _worker_node(address, env, tmp, "1")
    flag, go = tmp / "up", tmp / "go"
    driver = subprocess.Popen([sys.executable, "-c", _driver(address, f"""
import os, time
spark = ray_on_spark.init_spark("raylet-loss", 2, 1, "600MB", placement_group_strategy="STRICT_SPREAD")
session = ray_on_spark.active_spark()
open({str(flag)!r}, "w").close()
while not os.path.exists({str(go)!r}):
    time.sleep(0.1)
deadline = time.monotonic() + 120
while not session.replacements and time.monotonic() < deadline:
    time.sleep(0.2)
r = session.replacements[0]
print("REPLACED", r.lost_executor, r.new_executor, round(r.seconds, 1), "|", r.reason, flush=True)
# A replacement counts once its executor registered; its block manager registers a moment later,
# and executor_count() counts block managers (CI once read 1 here, right after the replacement).
deadline = time.monotonic() + 30
while session.executor_count() < 2 and time.monotonic() < deadline:
    time.sleep(0.1)
print("EXECUTORS", session.executor_count(), "COUNT", spark.range(0, 1000, numPartitions=8).count(), flush=True)
ray_on_spark.stop_spark()
""")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp), env=env)
    second = second_temp = None
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[1][-3000:]
            time.sleep(0.2)
        raylet = next(p for p in psutil.Process(first.pid).children(recursive=True) if p.name() == "raylet")
        killed = time.monotonic()
        raylet.kill()
        first.wait(60)  # ray start --block ends with its raylet; the supervisor takes the rest
        second, second_temp = _worker_node(address, env, tmp, "2")  # room for the lost bundle again
        go.touch()
        out, err = driver.communicate(timeout=240)
        took = time.monotonic() - killed
        assert driver.returncode == 0, err[-3000:]
        assert "EXECUTORS 2 COUNT 1000" in out, out + err[-2000:]
        replaced = next(ln for ln in out.splitlines() if ln.startswith("REPLACED"))
        logging.getLogger(__name__).info("raylet killed -> a new node joined -> %s (%.1fs from the kill to the end)",
                                         replaced, took)
    finally:
        if driver.poll() is None:
            driver.kill()
        for node in (first, second):
            if node is not None and node.poll() is None:
                node.terminate()
                node.wait(60)
        for temp in (first_temp, second_temp):
            if temp:
                shutil.rmtree(temp, ignore_errors=True)
