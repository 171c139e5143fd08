"""Autoscaling (``min_worker_nodes < max_worker_nodes``): Ray's autoscaler decides, Spark runs.

Why not the barrier job: a barrier stage holds all its slots for its whole life, so it
cannot grow or shrink.  An autoscaling cluster instead runs each worker node as a
*one-task* Spark job of its own (job group ``ray_on_spark-<cluster>-n<id>``):

* Ray's StandardAutoscaler runs in the head's monitor process (``ray start --head
  --autoscaling-config``) and reads demand and idle times from the GCS, honouring
  ``upscaling_speed`` and ``idle_timeout_minutes`` exactly as on any Ray cluster;
* its node provider (:mod:`ray_on_spark.on_spark.autoscaling.provider`) forwards create/terminate
  to the :class:`NodeLauncher` here, in the driver, over loopback HTTP with a secret;
* create submits the node's Spark job; terminate cancels it, which ends the task (its
  supervisor sees its parent go and stops the node) and frees the Spark slot for other
  Spark work.

Every node has the same shape, decided on the driver before anything starts (the
autoscaler must know it to plan): see :func:`autoscaled_share`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional

from ray_on_spark import spark_env
from ray_on_spark.errors import RayOnSparkError
from ray_on_spark.on_spark import resources
from ray_on_spark.on_spark.autoscaling.provider import HEAD_NODE_TYPE, SECRET_HEADER, WORKER_NODE_TYPE
from ray_on_spark.runtime.private import remove_file, write_private_file

logger = logging.getLogger(__name__)

PROVIDER_CLASS = "ray_on_spark.on_spark.autoscaling.provider.SparkTaskNodeProvider"


def autoscaler_config(
    *,
    cluster_id: str,
    head_resources: Dict[str, float],
    worker_resources: Dict[str, float],
    min_workers: int,
    max_workers: int,
    upscaling_speed: float,
    idle_timeout_minutes: float,
    launcher_url: str,
    secret_path: str,
) -> Dict[str, Any]:
    """The cluster config Ray's autoscaler reads (pure; the same keys as Ray's spark defaults.yaml).

    Node updaters are off (nothing to ssh into; the Spark task *is* the node) and
    ``use_node_id_as_ip`` makes ``NODE_ID_AS_RESOURCE`` the node's identity.
    """
    return {
        "cluster_name": f"ray_on_spark-{cluster_id}",
        "max_workers": max_workers,
        "upscaling_speed": upscaling_speed,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {
            "type": "external",
            "module": PROVIDER_CLASS,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "launcher_url": launcher_url,
            "secret_path": secret_path,
        },
        "available_node_types": {
            HEAD_NODE_TYPE: {"resources": dict(head_resources), "node_config": {}, "max_workers": 0},
            WORKER_NODE_TYPE: {
                "resources": dict(worker_resources),
                "node_config": {},
                "min_workers": min_workers,
                "max_workers": max_workers,
            },
        },
        "head_node_type": HEAD_NODE_TYPE,
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def autoscaled_share(
    hosts: Dict[str, resources.HostView],
    max_workers: int,
    executor_footprint: int,
    requested_heap: Optional[int],
    requested_object_store: Optional[int],
    allow_slow_storage: bool = False,
) -> resources.MemoryShare:
    """One memory shape for every autoscaled node that fits on every host even when full.

    ``hosts`` counts each host's task *slots* as its possible Ray nodes (at most
    ``max_workers`` of them can run anywhere); the smallest per-host share wins, so a
    node never overcommits whichever host Spark happens to place it on.
    """
    shares = []
    for view in hosts.values():
        nodes = max(1, min(view.num_ray_worker_nodes, max_workers))
        capped = resources.HostView(view.total_memory, view.shm_bytes, nodes, view.num_executors, view.reserved_bytes)
        shares.append(resources.worker_memory_share(capped, executor_footprint, requested_heap, requested_object_store,
                                                    allow_slow_storage=allow_slow_storage))
    return min(shares, key=lambda s: (s.total_bytes, s.heap_bytes))


@dataclass
class _Node:
    node_id: str
    tags: Dict[str, str]
    group: str
    thread: Optional[threading.Thread] = None
    cancelled: bool = False


class NodeLauncher:
    """Driver side: turns the autoscaler's create/terminate into Spark jobs; serves it over HTTP.

    ``submit(node_id, group)`` runs one node's Spark job to its end (blocking; called in
    a thread of its own); ``is_task_running(group)`` says whether its task has started.
    Listens on 127.0.0.1 only: the monitor that calls it runs on the driver's host.
    """

    def __init__(
        self,
        cluster_id: str,
        temp_dir: str,
        submit: Callable[[str, str], List[str]],
        cancel: Callable[[str], None],
        is_task_running: Callable[[str], bool],
    ):
        self.cluster_id = cluster_id
        self._submit = submit
        self._cancel = cancel
        self._is_task_running = is_task_running
        self._lock = threading.RLock()
        self._nodes: Dict[str, _Node] = {}
        self._max_id = 0
        self._closed = False
        self.secret = secrets.token_hex(32)
        self.secret_path = os.path.join(temp_dir, "launcher.secret")
        write_private_file(self.secret_path, self.secret, exclusive=True)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"ray_on_spark-launcher-{cluster_id}",
                                        daemon=True)
        self._thread.start()

    # -- what the provider asks
    def nodes(self) -> Dict[str, Any]:
        with self._lock:
            self._reap()
            return {
                "nodes": [
                    {"node_id": n.node_id, "tags": n.tags,
                     "status": "running" if self._is_task_running(n.group) else "pending"}
                    for n in self._nodes.values()
                ],
                "max_node_id": self._max_id,
            }

    def create(self, node_id: str, tags: Dict[str, str]) -> None:
        with self._lock:
            if self._closed:
                raise RayOnSparkError("the cluster is shutting down")
            if node_id in self._nodes:
                return
            node = _Node(node_id, dict(tags), f"ray_on_spark-{self.cluster_id}-n{node_id}")
            self._max_id = max(self._max_id, int(node_id))

            def run() -> None:
                results: List[str] = []
                try:
                    results = self._submit(node_id, node.group)
                except BaseException as e:  # cancelled (terminate / shutdown) or a Spark failure
                    if not node.cancelled:
                        logger.warning("Spark job of autoscaled Ray worker node %s failed: %s", node_id, str(e)[:500])
                for r in results:
                    info = json.loads(r)
                    if info.get("error"):
                        logger.warning("autoscaled Ray worker node %s: %s", node_id, info["error"][:2000])

            node.thread = spark_env.spark_thread(run, f"ray_on_spark-{self.cluster_id}-n{node_id}")
            self._nodes[node_id] = node
            node.thread.start()
        logger.info("autoscaler: starting Ray worker node %s (Spark job group %s)", node_id, node.group)

    def set_tags(self, node_id: str, tags: Dict[str, str]) -> None:
        with self._lock:
            if node_id in self._nodes:
                self._nodes[node_id].tags.update(tags)

    def terminate(self, node_id: str) -> None:
        with self._lock:
            node = self._nodes.get(node_id)
        if node is not None and not node.cancelled:
            node.cancelled = True
            logger.info("autoscaler: removing Ray worker node %s (cancelling %s)", node_id, node.group)
            self._cancel(node.group)

    def _reap(self) -> None:
        for node_id in [i for i, n in self._nodes.items() if n.thread is not None and not n.thread.is_alive()]:
            del self._nodes[node_id]

    # -- owner
    def groups(self) -> List[str]:
        with self._lock:
            return [n.group for n in self._nodes.values()]

    def threads(self) -> List[threading.Thread]:
        with self._lock:
            return [n.thread for n in self._nodes.values() if n.thread is not None]

    def close(self) -> None:
        """Stop serving and refuse new nodes; the caller ends the running ones."""
        with self._lock:
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        remove_file(self.secret_path)


def _handler(launcher: NodeLauncher) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            if not hmac.compare_digest(self.headers.get(SECRET_HEADER, ""), launcher.secret):
                return self._answer(403, {"error": "bad secret"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                if self.path == "/nodes":
                    return self._answer(200, launcher.nodes())
                if self.path == "/create":
                    launcher.create(str(body["node_id"]), body.get("tags", {}))
                elif self.path == "/terminate":
                    launcher.terminate(str(body["node_id"]))
                elif self.path == "/set_tags":
                    launcher.set_tags(str(body["node_id"]), body.get("tags", {}))
                else:
                    return self._answer(404, {"error": self.path})
                return self._answer(200, {})
            except Exception as e:
                logger.warning("node launcher: %s failed: %s", self.path, e)
                return self._answer(500, {"error": str(e)})

        def _answer(self, code: int, body: Dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args: Iterable) -> None:  # quiet: the monitor polls every second
            logger.debug("node launcher: " + fmt, *args)

    return Handler
