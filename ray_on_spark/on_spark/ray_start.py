"""``ray start``'s command line and environment, for the head and every worker node: written once, here.

Pure functions. ``head_node_options`` / ``worker_node_options`` use ray.util.spark's
convention (``{"foo_bar": value}`` means ``--foo-bar=value``; ``None`` means a flag); the
options the library sets itself are refused by name, with the argument to use instead.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ray_on_spark._ray import apply_env, auth_env

#: Node labels the library sets: which cluster a node belongs to, its Spark partition, its supervisor.
LABEL_CLUSTER = "ray-on-spark-cluster"
LABEL_PARTITION = "ray-on-spark-partition"
LABEL_PID = "ray-on-spark-supervisor-pid"
LABEL_CTIME = "ray-on-spark-supervisor-ctime-ms"
#: The module a worker node's ``ray start`` runs through (see :func:`worker_command`).
JOIN_HEAD_MODULE = "ray_on_spark.on_spark.join_head"
#: Custom resource that carries an autoscaled node's provider id (``use_node_id_as_ip``; the head is 0).
NODE_ID_RESOURCE = "NODE_ID_AS_RESOURCE"


def _blocked_keys(node: str, *others: str) -> Dict[str, Optional[str]]:
    """Options the library sets itself on a ``node`` ("head", "worker") node; the value names the argument instead."""
    own = {key: None for key in ("block", "head", "address", "node_ip_address", "port", "ray_client_server_port",
                                 "dashboard_agent_listen_port", "labels", *others)}
    resources = {key: f"{key}_{node}_node" for key in ("num_cpus", "num_gpus", "memory", "object_store_memory")}
    return {"temp_dir": "ray_temp_root_dir", **own, **resources}  # type: ignore[dict-item]


#: Options the library sets itself on the head; the value says which argument to use instead.
HEAD_BLOCKED_KEYS = _blocked_keys("head")
#: Options the library sets itself on every worker node (the dashboard and worker ports are the head's business).
WORKER_BLOCKED_KEYS = _blocked_keys("worker", "min_worker_port", "max_worker_port", "worker_port_list",
                                    "include_dashboard", "dashboard_host", "dashboard_port")


def validate_node_options(
    options: Optional[Mapping[str, object]],
    *,
    argument: str,
    blocked: Mapping[str, Optional[str]],
    known: Optional[Iterable[str]] = None,
) -> Dict[str, object]:
    """Check a ``*_node_options`` dict and return a copy.

    Raises ``ValueError`` naming the argument, the key, and what to do instead:
    a ``--foo-bar`` style key, a key the library controls, or (when ``known`` is
    given, i.e. the ``ray start`` parameter names) a key ``ray start`` lacks.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError(f"{argument}={options!r} must be a dict like {{'include_log_monitor': False}}.")
    known_set = set(known) if known is not None else None
    out: Dict[str, object] = {}
    for key, value in options.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{argument} has key {key!r}; keys are ray start option names like 'log_style'.")
        if key.startswith("-") or "-" in key:
            fixed = key.lstrip("-").replace("-", "_")
            raise ValueError(
                f"{argument} has key {key!r}; write ray start options as '{fixed}' (underscores, no dashes)."
            )
        if key in blocked:
            instead = blocked[key]
            hint = f"use the setup_ray_cluster argument '{instead}' instead" if instead else "ray_on_spark sets it itself"
            raise ValueError(f"{argument} has key {key!r}, which cannot be set here: {hint}.")
        if known_set is not None and key not in known_set:
            close = sorted(k for k in known_set if k.split("_")[0] == key.split("_")[0])[:5]
            raise ValueError(
                f"{argument} has key {key!r}, which is not a `ray start` option"
                + (f"; did you mean one of {close}?" if close else "; see `ray start --help`.")
            )
        out[key] = value
    return out


def to_cli_args(options: Mapping[str, object]) -> List[str]:
    """``{"include_log_monitor": False, "disable_usage_stats": None}`` -> ray start arguments."""
    args: List[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            args.append(flag)
        elif isinstance(value, bool):
            args.append(f"{flag}={'true' if value else 'false'}")
        elif isinstance(value, (dict, list)):
            args.append(f"{flag}={json.dumps(value)}")
        else:
            args.append(f"{flag}={value}")
    return args


def labels_arg(labels: Mapping[str, str]) -> str:
    """Render node labels for ``ray start --labels`` (``k=v,k2=v2``)."""
    for k, v in labels.items():
        if "," in k or "=" in k or "," in str(v) or "=" in str(v):
            raise ValueError(f"label {k}={v} may not contain ',' or '='")
    return ",".join(f"{k}={v}" for k, v in labels.items())


def merged_resources_option(options: Mapping[str, object], extra: Optional[Mapping[str, float]]) -> Dict[str, object]:
    """``options`` with ``extra`` custom resources added to its ``resources`` (a dict or a JSON string)."""
    merged = dict(options)
    if not extra:
        return merged
    given = merged.get("resources") or {}
    if isinstance(given, str):
        given = json.loads(given)
    merged["resources"] = {**dict(given), **extra}  # type: ignore[arg-type]
    return merged


@dataclass(frozen=True)
class NodeShape:
    """What a Ray node is given: CPUs, GPUs, heap and object store (bytes)."""

    num_cpus: int
    num_gpus: int
    heap_bytes: int
    object_store_bytes: int


def _common_args(shape: NodeShape, temp_dir: str, labels: Mapping[str, str]) -> List[str]:
    return [
        f"--num-cpus={shape.num_cpus}",
        f"--num-gpus={shape.num_gpus}",
        f"--memory={shape.heap_bytes}",
        f"--object-store-memory={shape.object_store_bytes}",
        f"--temp-dir={temp_dir}",
        # Several nodes may share a host: let the OS pick every port, no ranges to collide.
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--dashboard-agent-listen-port=0",
        "--disable-usage-stats",
        f"--labels={labels_arg(labels)}",
    ]


def head_command(
    *, host: str, port: int, client_server_port: int, dashboard: Optional[Tuple[str, int]], shape: NodeShape,
    temp_dir: str, labels: Mapping[str, str], options: Mapping[str, object], autoscaling_config: Optional[str] = None,
) -> List[str]:
    """``ray start --head`` for the driver; ``dashboard`` is (host, port), or None for no dashboard.

    No ``--block``: that CLI process would stay up for the node's life (117 MiB RSS) only to
    watch its children, which the supervisor (their subreaper) does anyway.
    """
    cmd = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
        f"--node-ip-address={host}", f"--port={port}", f"--ray-client-server-port={client_server_port}",
        *_common_args(shape, temp_dir, labels),
    ]
    if dashboard is None:
        cmd.append("--include-dashboard=false")
    else:
        cmd += [f"--dashboard-host={dashboard[0]}", f"--dashboard-port={dashboard[1]}"]
    if autoscaling_config is not None:  # Ray's monitor runs the autoscaler with our node provider
        cmd.append(f"--autoscaling-config={autoscaling_config}")
    return cmd + to_cli_args(options)


def worker_command(
    *, head_address: str, shape: NodeShape, temp_dir: str, labels: Mapping[str, str], options: Mapping[str, object],
    head_wait_s: float = 120.0, head_on_this_host: bool = True, head_temp_dir: Optional[str] = None,
) -> List[str]:
    """``ray start --address=<head>`` for a worker node in a Spark task (no ``--block``: see :func:`head_command`).

    It runs through :mod:`ray_on_spark.on_spark.join_head`, which holds it until the head is
    there (up to ``head_wait_s``) instead of letting Ray's 1-2 s retry sleeps do so, and
    imports Ray's CLI meanwhile only where that takes no CPU from the head. Given the head's
    ``--temp-dir`` (``head_temp_dir``), "there" is the head's GCS, not the head node.
    """
    early = [] if head_on_this_host else ["--import-early"]
    if head_temp_dir is not None:
        early.append(f"--head-temp-dir={head_temp_dir}")
    return [
        sys.executable, "-m", JOIN_HEAD_MODULE, f"--address={head_address}", f"--wait={head_wait_s:g}", *early, "--",
        "start", f"--address={head_address}", *_common_args(shape, temp_dir, labels), *to_cli_args(options),
    ]


def node_env(*, auth_token: Optional[str], gpus: Optional[Sequence[str]], temp_dir: str,
             base: Optional[Mapping[str, str]] = None, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment of a Ray node (head or worker) the library starts.

    ``TMPDIR`` is the node's own private temp dir: Ray's processes (the dashboard's
    multiprocessing among them) leave files there when they are killed. The node sees
    exactly the GPUs it was given (``CUDA_VISIBLE_DEVICES``), nothing else; it never
    inherits a ``RAY_ADDRESS`` meant for drivers. ``extra`` (a start hook's
    ``custom_environment_variables()``) is added first, so it cannot undo any of that.
    """
    env = dict(os.environ if base is None else base)
    env.update(extra or {})
    env["TMPDIR"] = temp_dir
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    apply_env(env, auth_env(auth_token))
    if gpus is not None:  # None: a GPU count without Spark addresses (the head, as in Ray): left as it is
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    env.pop("RAY_ADDRESS", None)
    return env


#: How often ``ray start --address`` asks the GCS for the head node's info, 2 s apart (Ray's default 20).
HEAD_INFO_RETRIES_ENV = "RAY_NUM_REDIS_GET_RETRIES"


def worker_patience_env(start_timeout: float) -> Dict[str, str]:
    """A worker node waits for the head's raylet to register as long as setup waits, not Ray's fixed 40 s.

    Worker nodes start while the head is still coming up (in parallel, not after it). A
    worker's ``ray start`` connects once the GCS answers, then asks it for the head node,
    which appears only when the head's raylet registers; Ray gives up after 20 tries 2 s
    apart ("No node info found for head node in GCS"). On a loaded host (a previous cluster
    still being torn down) the head's raylet took longer than that once in CI.
    """
    return {HEAD_INFO_RETRIES_ENV: str(max(20, int(start_timeout / 2) + 1))}

