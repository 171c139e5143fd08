"""Reading the cluster's nodes from the GCS's list: pure functions over node views (no Ray)."""

from __future__ import annotations

import os

import psutil

from ray_on_spark._ray import NodeView
from ray_on_spark.on_spark import nodes
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_CTIME, LABEL_PARTITION, LABEL_PID


def _view(node_id, partition, *, alive=True, cluster="c1", start=0, head=False, address="10.0.0.2", labels=None):
    tags = {LABEL_CLUSTER: cluster, LABEL_PARTITION: partition, **(labels or {})}
    return NodeView(node_id=node_id, address=address, alive=alive, is_head=head, labels=tags, start_time_ms=start)


def test_ours_are_the_alive_workers_with_our_label():
    views = [_view("h", "", head=True), _view("a", "0"), _view("b", "1", alive=False), _view("x", "0", cluster="c2")]
    assert [v.node_id for v in nodes.ours(views, "c1")] == ["a"]


def test_the_cluster_is_ready_only_with_its_own_head_alive_not_just_its_workers():
    workers = [_view("a", "0"), _view("b", "1")]
    assert not nodes.head_alive(workers, "c1")  # workers join before the head node registers now
    assert not nodes.head_alive(workers + [_view("h", "", head=True, cluster="c2")], "c1")  # another cluster's
    assert not nodes.head_alive(workers + [_view("h", "", head=True, alive=False)], "c1")
    assert nodes.head_alive(workers + [_view("h", "", head=True)], "c1")


def test_the_newest_node_of_each_partition_is_the_real_one_and_autoscaled_ones_come_last():
    views = [_view("old0", "0", start=1), _view("new0", "0", start=5), _view("n2", "n2"), _view("n10", "n10"),
             _view("one", "1")]
    assert [v.node_id for v in nodes.newest_per_partition(views)] == ["new0", "one", "n2", "n10"]


def test_a_dead_node_is_reported_once():
    views = [_view("a", "0", alive=False), _view("b", "1", alive=False), _view("c", "1")]
    assert [v.node_id for v in nodes.newly_dead(views, "c1", known={"a"})] == ["b"]


def test_local_supervisors_are_found_by_their_labels_and_verified_by_create_time():
    me = psutil.Process()
    ctime_ms = str(int(me.create_time() * 1000))
    real = _view("a", "0", address="10.0.0.1", labels={LABEL_PID: str(os.getpid()), LABEL_CTIME: ctime_ms})
    reused = _view("b", "1", address="10.0.0.1", labels={LABEL_PID: str(os.getpid()), LABEL_CTIME: "1000"})
    elsewhere = _view("c", "2", address="10.0.0.9", labels={LABEL_PID: str(os.getpid()), LABEL_CTIME: ctime_ms})
    found = nodes.local_supervisors([real, reused, elsewhere, _view("d", "3", address="10.0.0.1")], "10.0.0.1")
    assert [r.pid for r in found] == [os.getpid()]
