"""A worker node joins as soon as the head's GCS answers, without waiting for the head node.

Real Ray processes, no Spark: a head started the way the driver starts it, held (SIGSTOP of its
``ray start``) after its GCS published the session name and before its dashboard and raylet
are up, and a worker node started the way a barrier task starts it. With the head's temp dir
(what the driver ships in the worker plan) the worker node registers while the head node has
not; without it, a worker waits for the head node, as Ray's own ``ray start`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import psutil
import pytest

from ray_on_spark import _ray
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, NodeShape, head_command, node_env, worker_command
from ray_on_spark.runtime.ports import free_ports, port_open
from ray_on_spark.runtime.supervised import SupervisedProcess, supervisor_command
from ray_on_spark.runtime.waiting import wait_until

pytestmark = pytest.mark.any_spark  # Ray's processes only

SHAPE = NodeShape(num_cpus=1, num_gpus=0, heap_bytes=500 * 2**20, object_store_bytes=200 * 2**20)


def _head_cli(supervisor_pid: int) -> psutil.Process:
    """The head's ``ray start`` process (the supervisor's child)."""
    return next(c for c in psutil.Process(supervisor_pid).children() if "ray.scripts.scripts" in c.cmdline())


def test_a_worker_node_joins_while_the_head_node_has_not_registered_yet(no_ray_left, monkeypatch):
    port, client_port, dashboard_port = free_ports(3)
    address = f"127.0.0.1:{port}"
    token = _ray.new_token()
    root = tempfile.mkdtemp(prefix="rosj-")  # short: Ray's socket paths must fit in 107 bytes
    head_dir, worker_dir = os.path.join(root, "h"), os.path.join(root, "w")
    head_temp, worker_temp = os.path.join(head_dir, "r"), os.path.join(worker_dir, "r")
    os.makedirs(head_dir), os.makedirs(worker_dir)
    head_cmd = head_command(host="127.0.0.1", port=port, client_server_port=client_port,
                            dashboard=("127.0.0.1", dashboard_port), shape=SHAPE, temp_dir=head_temp,
                            labels={LABEL_CLUSTER: "jh"}, options={})
    head = SupervisedProcess(
        supervisor_command(head_cmd, log=os.path.join(root, "head.log"), cleanup_dir=head_dir, start_timeout=120),
        node_env(auth_token=token, gpus=None, temp_dir=head_dir), what="Ray head node")
    worker = None
    try:
        with _ray.auth_context(token):
            client = wait_until(lambda: port_open("127.0.0.1", port) and _ray.gcs_client(address), timeout=60,
                                what="the head's GCS")
            session = wait_until(lambda: _ray.session_name(client), timeout=60, poll=0.02,
                                 what="the head's session name")
            cli = _head_cli(head.pid)
            cli.suspend()  # the head stays without its raylet: it starts only after the dashboard answered
            try:
                assert not [v for v in _ray.list_nodes(client) if v.is_head], \
                    "premise: the head node registered before its ray start was held"

                # Without the head's temp dir a worker waits for the head node (and here gives up).
                waiting = subprocess.run(
                    worker_command(head_address=address, shape=SHAPE, temp_dir=worker_temp, labels={}, options={},
                                   head_wait_s=2),
                    env=node_env(auth_token=token, gpus=None, temp_dir=worker_dir), capture_output=True, text=True,
                    timeout=60)
                assert waiting.returncode == 1, waiting.stderr
                assert f"waiting for the Ray head node at {address} to register" in waiting.stderr

                # With it, the worker node starts now and registers before the head node does.
                worker_cmd = worker_command(head_address=address, shape=SHAPE, temp_dir=worker_temp,
                                            labels={LABEL_CLUSTER: "jh"}, options={}, head_wait_s=60,
                                            head_temp_dir=head_temp)
                worker = SupervisedProcess(
                    supervisor_command(worker_cmd, log=os.path.join(root, "worker.log"), cleanup_dir=worker_dir,
                                       start_timeout=120, watch=("127.0.0.1", port)),
                    node_env(auth_token=token, gpus=None, temp_dir=worker_dir))
                assert worker.wait_ready(90) is None, open(os.path.join(root, "worker.log")).read()[-3000:]
                views = wait_until(lambda: [v for v in _ray.list_nodes(client) if v.alive] or None, timeout=30,
                                   what="the worker node to register")
                assert [v.is_head for v in views] == [False]
                assert views[0].labels[LABEL_CLUSTER] == "jh"
                # the head's session, in the worker's own temp dir (not the head's)
                assert os.path.isdir(os.path.join(worker_temp, session, "logs"))
            finally:
                cli.resume()

            # Let go, the head comes up too: one cluster of two nodes.
            assert head.wait_ready(120) is None, open(os.path.join(root, "head.log")).read()[-3000:]
            alive = wait_until(lambda: (lambda v: v if len(v) == 2 else None)(
                [v for v in _ray.list_nodes(client) if v.alive]), timeout=60, what="both nodes alive")
            assert sorted(v.is_head for v in alive) == [False, True]
            # what the worker was given is what the head registered
            (registered,) = [i for i in client.get_all_node_info(timeout=5).values() if i.is_head_node]
            assert (registered.temp_dir, registered.session_dir) == (head_temp, os.path.join(head_temp, session))

            # Only the head-node lookup is answered without the GCS; any other goes to Ray's own.
            import ray._private.node as node_module
            from ray.core.generated.gcs_service_pb2 import GetAllNodeInfoRequest

            monkeypatch.setattr(node_module, "get_all_node_info_until_retrieved",
                                node_module.get_all_node_info_until_retrieved)  # restored after the test
            _ray.skip_head_node_lookup("/nowhere", "session_x")
            head_selector = GetAllNodeInfoRequest.NodeSelector(is_head_node=True)
            (given,) = node_module.get_all_node_info_until_retrieved(client, node_selectors=[head_selector])
            assert (given.temp_dir, given.session_dir) == ("/nowhere", "/nowhere/session_x")
            assert len(node_module.get_all_node_info_until_retrieved(client, num_retries=1)) == 2
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
