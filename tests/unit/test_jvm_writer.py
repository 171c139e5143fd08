"""Pure logic of the JVM Arrow-file path of from_spark (no Spark, no Ray)."""

from __future__ import annotations

from ray_on_spark.data import jvm_writer
from ray_on_spark.data.spark_arrow import columnar_types_only


def test_executor_hosts_map_to_a_ray_node_on_that_host():
    nodes = {"10.0.0.5": "n5", "10.0.0.6": "n6", jvm_writer.LOOPBACK: "driver-node"}
    assert jvm_writer.node_for("10.0.0.6", nodes) == "n6"
    assert jvm_writer.node_for("127.0.0.1", nodes) == "driver-node"  # bound to loopback: the driver's host
    assert jvm_writer.node_for("localhost", nodes) == "driver-node"
    assert jvm_writer.node_for("10.0.0.9", nodes) is None  # no Ray node there: from_spark uses Python workers
    assert jvm_writer.node_for("no-such-host.invalid", nodes) is None


def test_the_jar_is_named_by_its_source_in_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = jvm_writer.java_source()
    path = jvm_writer.jar_path(source)
    assert path.startswith(str(tmp_path / "ray_on_spark" / "jars"))
    assert jvm_writer.jar_path(source + "\n// changed") != path  # a changed writer is a new jar, never a stale one


def test_the_switch_turns_the_path_off(monkeypatch):
    monkeypatch.setenv(jvm_writer.ENV, "0")
    assert not jvm_writer.enabled()


def test_room_leaves_the_object_stores_unused_capacity_free():
    gib = 2**30
    assert jvm_writer.room(10 * gib, 2 * gib) == 8 * gib
    assert jvm_writer.room(1 * gib, 2 * gib) == 0  # never negative
    assert jvm_writer.fits(4 * gib, 8 * gib)
    assert not jvm_writer.fits(4 * gib + 1, 8 * gib)  # at most half the room


def test_nodes_sharing_a_host_share_its_room_and_one_node_serves_the_host():
    alive = [
        {"NodeID": "head", "NodeManagerAddress": "10.0.0.5", "Resources": {"object_store_memory": 3e9}},
        {"NodeID": "w1", "NodeManagerAddress": "10.0.0.5", "Resources": {"object_store_memory": 1e9}},
        {"NodeID": "w2", "NodeManagerAddress": "10.0.0.6", "Resources": {"object_store_memory": 2e9}},
    ]
    stores = jvm_writer.object_store_bytes_by_node(alive)
    assert stores == {"head": 4 * 10**9, "w1": 4 * 10**9, "w2": 2 * 10**9}  # one /dev/shm per host
    nodes = jvm_writer.host_nodes(alive, driver_node="head")
    assert nodes == {"10.0.0.5": "head", "10.0.0.6": "w2", jvm_writer.LOOPBACK: "head"}


def test_only_flat_types_are_copied_column_by_column():
    assert columnar_types_only(["long", "double", "string", "decimal", "timestamp_ntz", "boolean"])
    assert not columnar_types_only(["long", "array"])  # nested: Spark's row-wise encoding
    assert not columnar_types_only(["struct"])
