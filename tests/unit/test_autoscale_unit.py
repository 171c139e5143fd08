"""Pure parts of autoscaling: Ray's autoscaler config, the one node shape, the launcher's door.

No Spark here: the launcher is given plain functions for submit/cancel, and the test
only checks what it does with the HTTP requests (the secret, the bookkeeping).
The real thing, on Spark and Ray, is tests/test_autoscaling.py.
"""

from __future__ import annotations

import json
import threading
import urllib.error

import pytest

from ray_on_spark.errors import InsufficientResourcesError
from ray_on_spark.on_spark.autoscaling.launcher import NodeLauncher, autoscaled_share, autoscaler_config
from ray_on_spark.on_spark.autoscaling.provider import call_launcher
from ray_on_spark.on_spark.resources import HostView
from ray_on_spark.runtime.units import GIB


def test_config_carries_speed_idle_timeout_bounds_and_our_provider():
    cfg = autoscaler_config(cluster_id="abc", head_resources={"CPU": 0}, worker_resources={"CPU": 1, "memory": 5},
                            min_workers=0, max_workers=3, upscaling_speed=2.5, idle_timeout_minutes=0.5,
                            launcher_url="http://127.0.0.1:1", secret_path="/x/secret")
    assert cfg["upscaling_speed"] == 2.5 and cfg["idle_timeout_minutes"] == 0.5 and cfg["max_workers"] == 3
    assert cfg["provider"]["type"] == "external"
    assert cfg["provider"]["module"] == "ray_on_spark.on_spark.autoscaling.provider.SparkTaskNodeProvider"
    assert cfg["provider"]["use_node_id_as_ip"] and cfg["provider"]["disable_node_updaters"]
    worker = cfg["available_node_types"]["ray.worker"]
    assert (worker["min_workers"], worker["max_workers"], worker["resources"]) == (0, 3, {"CPU": 1, "memory": 5})
    assert "secret" not in cfg["provider"] and cfg["provider"]["secret_path"] == "/x/secret"  # a 0600 file, not the value


def test_one_shape_fits_the_fullest_host():
    big = HostView(total_memory=64 * GIB, shm_bytes=32 * GIB, num_ray_worker_nodes=2, num_executors=1)
    small = HostView(total_memory=16 * GIB, shm_bytes=8 * GIB, num_ray_worker_nodes=4, num_executors=2)
    share = autoscaled_share({"a": big, "b": small}, max_workers=8, executor_footprint=2 * GIB,
                             requested_heap=None, requested_object_store=None)
    # small host: (16*0.8 - 2*2) GiB for 4 nodes = 2.2 GiB each; the big one could give more
    assert share.total_bytes == int((16 * GIB * 0.8 - 4 * GIB)) // 4
    # max_workers caps how many can land on one host: 1 node may use the whole small host's budget
    alone = autoscaled_share({"b": small}, max_workers=1, executor_footprint=2 * GIB,
                             requested_heap=None, requested_object_store=None)
    assert alone.total_bytes == int(16 * GIB * 0.8 - 4 * GIB)
    with pytest.raises(InsufficientResourcesError, match="memory_worker_node"):
        autoscaled_share({"b": small}, 8, 2 * GIB, requested_heap=4 * GIB, requested_object_store=None)


def test_launcher_answers_only_with_the_secret_and_tracks_nodes(tmp_path):
    release = threading.Event()
    cancelled = []

    def submit(node_id, group):
        release.wait(10)
        return [json.dumps({"node_id": node_id, "status": "stopped"})]

    def cancel(group):
        cancelled.append(group)
        release.set()

    launcher = NodeLauncher("cid", str(tmp_path), submit, cancel, is_task_running=lambda g: True)
    try:
        assert oct((tmp_path / "launcher.secret").stat().st_mode & 0o777) == "0o600"
        assert launcher.url.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as err:
            call_launcher(launcher.url, "wrong", "/nodes", {})
        assert err.value.code == 403
        call_launcher(launcher.url, launcher.secret, "/create", {"node_id": "4", "tags": {"k": "v"}})
        got = call_launcher(launcher.url, launcher.secret, "/nodes", {})
        assert got["max_node_id"] == 4
        assert got["nodes"] == [{"node_id": "4", "tags": {"k": "v"}, "status": "running"}]
        call_launcher(launcher.url, launcher.secret, "/terminate", {"node_id": "4"})
        assert cancelled == ["ray_on_spark-cid-n4"]
        for t in launcher.threads():
            t.join(10)
        assert call_launcher(launcher.url, launcher.secret, "/nodes", {})["nodes"] == []  # gone once its job ended
    finally:
        launcher.close()
    assert not (tmp_path / "launcher.secret").exists()
