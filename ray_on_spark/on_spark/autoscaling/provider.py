"""The NodeProvider Ray's autoscaler loads (``provider.type: external``) for an autoscaling cluster.

It runs inside the head's monitor process, not in the driver: Ray's StandardAutoscaler
decides *when* to add or remove a worker node from the GCS's demand and idle times,
and calls this provider, which forwards each decision to the driver's
:class:`ray_on_spark.on_spark.autoscaling.launcher.NodeLauncher` over loopback HTTP (a per-cluster secret in
a header).  The launcher turns "create node 3" into a one-task Spark job that runs the
node, and "terminate node 3" into cancelling that job, which frees the Spark slot.

Node ids are small integers as strings; each node also carries the custom resource
``NODE_ID_AS_RESOURCE = id`` so that, with ``use_node_id_as_ip``, the autoscaler can tell
which Ray node is which provider node (several share one IP).  The head is node "0".
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Any, Dict, List, Optional

from ray.autoscaler.node_launch_exception import NodeLaunchException
from ray.autoscaler.node_provider import NodeProvider
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_SETTING_UP,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_NAME,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

logger = logging.getLogger(__name__)

HEAD_NODE_ID = "0"
HEAD_NODE_TYPE = "ray.head.default"
WORKER_NODE_TYPE = "ray.worker"
SECRET_HEADER = "X-Ray-On-Spark-Secret"


def call_launcher(url: str, secret: str, path: str, body: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]:
    """POST JSON to the driver's node launcher; raises on any non-200 answer."""
    req = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", SECRET_HEADER: secret},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


class SparkTaskNodeProvider(NodeProvider):
    """Ray worker nodes that are Spark tasks; the driver's launcher owns them."""

    def __init__(self, provider_config: Dict[str, Any], cluster_name: str):
        super().__init__(provider_config, cluster_name)
        self.lock = threading.RLock()
        self.url = provider_config["launcher_url"]
        with open(provider_config["secret_path"]) as f:
            self.secret = f.read().strip()
        self._nodes: Dict[str, Dict[str, Any]] = {}
        self._next_id = 0
        self._refresh()

    # -- state, always re-read from the launcher (the driver is the source of truth)
    def _refresh(self) -> None:
        result = call_launcher(self.url, self.secret, "/nodes", {})
        nodes = {HEAD_NODE_ID: {"status": "running", "tags": {
            TAG_RAY_NODE_KIND: NODE_KIND_HEAD, TAG_RAY_USER_NODE_TYPE: HEAD_NODE_TYPE,
            TAG_RAY_NODE_NAME: HEAD_NODE_ID, TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE}}}
        for node in result["nodes"]:
            tags = dict(node["tags"])
            tags[TAG_RAY_NODE_STATUS] = STATUS_UP_TO_DATE if node["status"] == "running" else STATUS_SETTING_UP
            nodes[str(node["node_id"])] = {"status": node["status"], "tags": tags}
        self._nodes = nodes
        self._next_id = max(self._next_id, int(result["max_node_id"]))

    def non_terminated_nodes(self, tag_filters: Dict[str, str]) -> List[str]:
        with self.lock:
            self._refresh()
            return [i for i, n in self._nodes.items() if all(n["tags"].get(k) == v for k, v in tag_filters.items())]

    def is_running(self, node_id: str) -> bool:
        with self.lock:
            return node_id in self._nodes and self._nodes[node_id]["status"] == "running"

    def is_terminated(self, node_id: str) -> bool:
        with self.lock:
            return node_id not in self._nodes

    def node_tags(self, node_id: str) -> Dict[str, str]:
        with self.lock:
            return self._nodes[node_id]["tags"]

    def external_ip(self, node_id: str) -> str:
        return node_id  # use_node_id_as_ip: the id stands in for the IP

    def internal_ip(self, node_id: str) -> str:
        return node_id

    def set_node_tags(self, node_id: str, tags: Dict[str, str]) -> None:
        with self.lock:
            if node_id in self._nodes:
                self._nodes[node_id]["tags"].update(tags)
            if node_id != HEAD_NODE_ID:
                call_launcher(self.url, self.secret, "/set_tags", {"node_id": node_id, "tags": tags})

    # -- decisions
    def create_node(self, node_config: Dict[str, Any], tags: Dict[str, str], count: int) -> Optional[Dict[str, Any]]:
        raise AssertionError("the autoscaler calls create_node_with_resources_and_labels")

    def create_node_with_resources_and_labels(
        self, node_config: Dict[str, Any], tags: Dict[str, str], count: int, resources: Dict[str, float],
        labels: Dict[str, str],
    ) -> Optional[Dict[str, Any]]:
        for _ in range(count):
            with self.lock:
                self._next_id += 1
                node_id = str(self._next_id)
                node_tags = dict(tags)
                node_tags.update({TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: WORKER_NODE_TYPE,
                                  TAG_RAY_NODE_NAME: node_id, TAG_RAY_NODE_STATUS: STATUS_SETTING_UP})
                try:
                    call_launcher(self.url, self.secret, "/create", {"node_id": node_id, "tags": node_tags})
                except Exception as e:
                    raise NodeLaunchException("Spark task for a Ray worker node", f"node {node_id}: {e}", None)
                self._nodes[node_id] = {"status": "pending", "tags": node_tags}
            logger.info("ray_on_spark: launched worker node %s", node_id)
        return None

    def terminate_node(self, node_id: str) -> Optional[Dict[str, Any]]:
        if node_id != HEAD_NODE_ID:
            call_launcher(self.url, self.secret, "/terminate", {"node_id": node_id})
            logger.info("ray_on_spark: terminated worker node %s", node_id)
        with self.lock:
            self._nodes.pop(node_id, None)
        return None

    @staticmethod
    def bootstrap_config(cluster_config: Dict[str, Any]) -> Dict[str, Any]:
        return cluster_config
