"""Global mode: one long-lived Ray-on-Spark cluster per user and host, shared by many drivers.

``setup_global_ray_cluster`` (Ray 2.60's name and arguments) starts the cluster like
``setup_ray_cluster`` and, by default, blocks until Ctrl-C or SIGTERM, then shuts it
down.  Other drivers find it through a small *private* state directory:

* ``global-cluster.lock`` -- held (``flock``) by the process that owns the cluster, so a
  second global cluster is refused before anything starts;
* ``global-cluster.json`` -- address, client address, dashboard URL, owner pid (0600);
* ``global-cluster.token`` -- the cluster's Ray auth token (0600), for ``RAY_AUTH_TOKEN_PATH``.

Ray's own global mode makes ``ray.init()`` find the cluster through the shared
``/tmp/ray`` directory, which every user of the host can read; ours keeps the token in
the user's own directory instead, and :func:`connect_global_cluster` does the ``ray.init``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any, Dict, Optional

from ray_on_spark import _ray
from ray_on_spark.errors import ClusterAlreadyRunningError, NoGlobalClusterError
from ray_on_spark.runtime.private import private_dir, remove_file, write_private_file

if TYPE_CHECKING:  # pragma: no cover
    from ray_on_spark.on_spark.cluster import RayClusterOnSpark

logger = logging.getLogger(__name__)

LOCK_NAME = "global-cluster.lock"
INFO_NAME = "global-cluster.json"
TOKEN_NAME = "global-cluster.token"


def state_dir() -> str:
    """``$XDG_RUNTIME_DIR/ray_on_spark`` (per-user, tmpfs) when set, else ``~/.ray_on_spark``; made 0700."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.expanduser("~")
    return private_dir(os.path.join(base, "ray_on_spark" if os.environ.get("XDG_RUNTIME_DIR") else ".ray_on_spark"))


class GlobalLock:
    """The exclusive, non-blocking ``flock`` that makes a global cluster one of a kind.

    The kernel drops it when the owning process dies, so a crashed owner never leaves a
    stale lock behind.
    """

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = read_info(os.path.dirname(self.path)) or {}
            raise ClusterAlreadyRunningError(
                f"A global Ray-on-Spark cluster is already running (owner pid {info.get('pid', '?')}, address "
                f"{info.get('address', '?')}). Connect to it with ray_on_spark.connect_global_cluster(), or stop "
                "it (Ctrl-C or SIGTERM to its owner) before setting up another."
            ) from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def publish(directory: str, cluster: "RayClusterOnSpark") -> Dict[str, object]:
    """Write the info and token files other drivers connect with (both 0600)."""
    token_path = None
    if cluster.auth_token:
        token_path = write_private_file(os.path.join(directory, TOKEN_NAME), cluster.auth_token)
    info = {
        "address": cluster.address,
        "client_address": cluster.client_address,
        "dashboard_url": cluster.dashboard_url,
        "token_path": token_path,
        "pid": os.getpid(),
        "cluster_id": cluster.cluster_id,
    }
    write_private_file(os.path.join(directory, INFO_NAME), json.dumps(info))
    return info


def unpublish(directory: str) -> None:
    for name in (INFO_NAME, TOKEN_NAME):
        remove_file(os.path.join(directory, name))


def read_info(directory: Optional[str] = None) -> Optional[Dict[str, object]]:
    """The running global cluster's info, or None (no file, or its owner is gone)."""
    path = os.path.join(directory or state_dir(), INFO_NAME)
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None  # the owner died without cleaning up: nothing is running there
    return info


def connect_global_cluster(**init_kwargs: Any) -> Any:
    """``ray.init()`` to this user's global Ray-on-Spark cluster, with its token.

    Raises :class:`NoGlobalClusterError` naming what to do when no global cluster is running.
    """
    import ray

    info = read_info()
    if info is None:
        raise NoGlobalClusterError(
            "No global Ray-on-Spark cluster is running for this user on this host; start one with "
            "`ray-on-spark start --max-worker-nodes N` or ray_on_spark.setup_global_ray_cluster(max_worker_nodes=...) "
            "in another driver."
        )
    if info.get("token_path"):
        _ray.use_auth(token_path=str(info["token_path"]))
    else:
        _ray.refresh_auth_config()
    return ray.init(address=str(info["address"]), **init_kwargs)


def block_until_stopped(cluster: "RayClusterOnSpark", poll_s: float = 1.0) -> None:
    """Serve until Ctrl-C, SIGTERM, or the cluster stopping by itself; the caller shuts down.

    SIGTERM is turned into a clean return (only possible from the main thread, where
    Python delivers signals); Ctrl-C arrives as KeyboardInterrupt and is swallowed here,
    since stopping is what the user asked for.
    """
    stop = threading.Event()
    previous = None
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        logger.info("global Ray cluster %s serving at %s; Ctrl-C or SIGTERM stops it", cluster.cluster_id, cluster.address)
        while not stop.wait(poll_s):
            if cluster.state != "running":
                logger.warning("global Ray cluster %s is %s; returning", cluster.cluster_id, cluster.state)
                return
    except KeyboardInterrupt:
        logger.info("interrupted: shutting down the global Ray cluster %s", cluster.cluster_id)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
