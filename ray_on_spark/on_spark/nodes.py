"""A cluster's nodes as the GCS reports them, read for the driver: pure functions over node views.

The GCS lists every node it has known, dead ones too, and a node restarted in its Spark
task appears twice for a moment (the old one is "alive" until its health checks fail).
These functions pick out this cluster's worker nodes by their labels, the real one of
each Spark partition, the newly dead, and the supervisors that run on the driver's host.
"""

from __future__ import annotations

from typing import Container, Dict, List, Tuple

from ray_on_spark._ray import NodeView
from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_CTIME, LABEL_PARTITION, LABEL_PID
from ray_on_spark.runtime import procs


def ours(views: List[NodeView], cluster_id: str) -> List[NodeView]:
    """Alive worker nodes that carry this cluster's label."""
    return [v for v in views if v.alive and not v.is_head and v.labels.get(LABEL_CLUSTER) == cluster_id]


def head_alive(views: List[NodeView], cluster_id: str) -> bool:
    """Whether this cluster's head node has registered and is alive (its raylet is up).

    Worker nodes no longer wait for it (they join once the head's GCS answers), so "every
    worker node registered" does not imply it: a driver's ``ray.init()`` needs the head's raylet.
    """
    return any(v.alive and v.is_head and v.labels.get(LABEL_CLUSTER) == cluster_id for v in views)


def partition_order(label: str) -> Tuple[bool, int]:
    """Barrier nodes are labelled 0, 1, ...; autoscaled ones n1, n2, ... (after them)."""
    digits = label.lstrip("n")
    return (label.startswith("n"), int(digits) if digits.isdigit() else 0)


def newest_per_partition(views: List[NodeView]) -> List[NodeView]:
    """One node per Spark partition, the newest (a restarted node's predecessor is still listed a moment)."""
    newest: Dict[str, NodeView] = {}
    for v in views:
        part = v.labels.get(LABEL_PARTITION, "")
        if part not in newest or v.start_time_ms > newest[part].start_time_ms:
            newest[part] = v
    return sorted(newest.values(), key=lambda v: partition_order(v.labels.get(LABEL_PARTITION, "")))


def started_since(views: List[NodeView], since_ms: int) -> List[NodeView]:
    """The nodes among ``views`` that started at or after ``since_ms`` (epoch ms): a new job's, not a lost one's."""
    return [v for v in views if v.start_time_ms >= since_ms]


def newly_dead(views: List[NodeView], cluster_id: str, known: Container[str]) -> List[NodeView]:
    """This cluster's worker nodes that died and are not in ``known`` yet."""
    return [v for v in views if not v.is_head and not v.alive and v.labels.get(LABEL_CLUSTER) == cluster_id
            and v.node_id not in known]


def local_supervisors(views: List[NodeView], host: str) -> List[procs.ProcessRecord]:
    """The live supervisors of the nodes on ``host`` (each node's labels name its supervisor's pid and start)."""
    out = []
    for v in views:
        if v.address != host:
            continue
        try:
            record = procs.ProcessRecord(int(v.labels[LABEL_PID]), int(v.labels[LABEL_CTIME]) / 1000.0)
        except (KeyError, ValueError):
            continue
        p = record.process()
        if p is not None:
            out.append(procs.ProcessRecord(p.pid, p.create_time()))
    return out
