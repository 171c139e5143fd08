"""Translating user options into ``ray start`` arguments, and refusing the ones we own.

Pure functions: ``head_node_options`` / ``worker_node_options`` use ray.util.spark's
convention (``{"foo_bar": value}`` means ``--foo-bar=value``; ``None`` means a flag).
``switched_on`` reads the library's on/off environment variables, one way for all.
"""

from __future__ import annotations

import json
from typing import Dict, Iterable, List, Mapping, Optional

def switched_on(value: Optional[str]) -> bool:
    """An on/off environment variable's value (unset: on); "0", "false", "no", "off" turn it off."""
    return (value or "1").strip().lower() not in ("0", "false", "no", "off")


#: Options the library sets itself on the head; the value says which argument to use instead.
HEAD_BLOCKED_KEYS: Dict[str, Optional[str]] = {
    "temp_dir": "ray_temp_root_dir",
    "block": None,
    "head": None,
    "address": None,
    "node_ip_address": None,
    "port": None,
    "num_cpus": "num_cpus_head_node",
    "num_gpus": "num_gpus_head_node",
    "memory": "memory_head_node",
    "object_store_memory": "object_store_memory_head_node",
    "ray_client_server_port": None,
    "dashboard_agent_listen_port": None,
    "labels": None,
}

#: Options the library sets itself on every worker node.
WORKER_BLOCKED_KEYS: Dict[str, Optional[str]] = {
    "temp_dir": "ray_temp_root_dir",
    "block": None,
    "head": None,
    "address": None,
    "node_ip_address": None,
    "port": None,
    "num_cpus": "num_cpus_worker_node",
    "num_gpus": "num_gpus_worker_node",
    "memory": "memory_worker_node",
    "object_store_memory": "object_store_memory_worker_node",
    "dashboard_agent_listen_port": None,
    "min_worker_port": None,
    "max_worker_port": None,
    "worker_port_list": None,
    "labels": None,
    "include_dashboard": None,
    "dashboard_host": None,
    "dashboard_port": None,
    "ray_client_server_port": None,
}


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


def ray_start_option_names() -> List[str]:
    """Parameter names of the installed ``ray start`` (click command), for validation."""
    from ray.scripts.scripts import start  # imported lazily: it pulls in click and ray

    return [p.name for p in start.params if p.name]


def labels_arg(labels: Mapping[str, str]) -> str:
    """Render node labels for ``ray start --labels`` (``k=v,k2=v2``)."""
    for k, v in labels.items():
        if "," in k or "=" in k or "," in str(v) or "=" in str(v):
            raise ValueError(f"label {k}={v} may not contain ',' or '='")
    return ",".join(f"{k}={v}" for k, v in labels.items())
