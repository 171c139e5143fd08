"""``setup_ray_cluster``'s arguments, checked on their own: step 1 of planning (:mod:`.plan`).

Pure: no Spark, no Ray, no files. What needs them -- ``ray start``'s option names, the
host's memory -- is passed in; the directories (writable?) are checked by the api.
Each error is a ``ValueError``/``TypeError`` naming the argument, the value, and a value
that would work; deprecated aliases are mapped with a warning, as Ray 2.60 does.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Union

from ray_on_spark.on_spark.ray_start import HEAD_BLOCKED_KEYS, WORKER_BLOCKED_KEYS, validate_node_options
from ray_on_spark.runtime.units import format_bytes, parse_memory

#: Same meaning as ``ray.util.spark.MAX_NUM_WORKER_NODES``: one node per available task slot.
MAX_NUM_WORKER_NODES = -1

DEPRECATED = {
    "num_cpus_per_node": "num_cpus_worker_node",
    "num_gpus_per_node": "num_gpus_worker_node",
    "object_store_memory_per_node": "object_store_memory_worker_node",
}
REMOVED = {
    "num_worker_nodes": "use max_worker_nodes (and min_worker_nodes) instead",
    "autoscale": "set min_worker_nodes < max_worker_nodes instead",
}


@dataclass(frozen=True)
class SetupArgs:
    """``setup_ray_cluster``'s arguments, checked; sizes in bytes."""

    max_worker_nodes: int  # may be MAX_NUM_WORKER_NODES
    min_worker_nodes: Optional[int] = None
    num_cpus_worker_node: Optional[int] = None
    num_gpus_worker_node: Optional[int] = None
    num_cpus_head_node: Optional[int] = None
    num_gpus_head_node: Optional[int] = None
    memory_worker_node: Optional[int] = None
    memory_head_node: Optional[int] = None
    object_store_memory_worker_node: Optional[int] = None
    object_store_memory_head_node: Optional[int] = None
    head_options: Dict[str, object] = field(default_factory=dict)
    worker_options: Dict[str, object] = field(default_factory=dict)
    ray_temp_root_dir: Optional[str] = None
    strict_mode: bool = False
    collect_log_to_path: Optional[str] = None
    upscaling_speed: float = 1.0
    idle_timeout_minutes: float = 1.0
    start_timeout: float = 120.0
    is_global: bool = False


def _int_arg(name: str, value: object, minimum: int, example: int, allow_none: bool = True) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}, e.g. {name}={example}.")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be >= {minimum}, e.g. {name}={example}.")
    return value


def _positive_number(name: str, value: object, default: float, zero_ok: bool) -> float:
    """autoscale_*: None means Ray's default; otherwise a finite number > 0 (or >= 0)."""
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):  # type: ignore[operator]
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name}={value!r} must be a number {bound}, e.g. {name}={default}.")
    return float(value)  # type: ignore[arg-type]


def _memory_arg(name: str, value: object) -> Optional[int]:
    if value is None:
        return None
    n = parse_memory(value, name=name)
    if n <= 0:
        raise ValueError(f"{name}={value!r} must be positive, e.g. {name}=2147483648 (2 GiB).")
    return n


def check_arguments(
    *,
    known_options: Union[Sequence[str], Callable[[], Sequence[str]]],
    host_memory: int,
    max_worker_nodes: object,
    min_worker_nodes: object = None,
    num_cpus_worker_node: object = None,
    num_cpus_head_node: object = None,
    num_gpus_worker_node: object = None,
    num_gpus_head_node: object = None,
    memory_worker_node: object = None,
    memory_head_node: object = None,
    object_store_memory_worker_node: object = None,
    object_store_memory_head_node: object = None,
    head_node_options: object = None,
    worker_node_options: object = None,
    ray_temp_root_dir: object = None,
    strict_mode: object = False,
    collect_log_to_path: object = None,
    autoscale_upscaling_speed: object = 1.0,
    autoscale_idle_timeout_minutes: object = 1.0,
    start_timeout: float = 120.0,
    is_global: bool = False,
    **kwargs: object,
) -> SetupArgs:
    """Check every argument without Spark: ``known_options`` are ``ray start``'s option names
    (or a function that returns them, called only when node options are given: reading them
    imports Ray's CLI, a second of a setup that has no options to check), ``host_memory`` this
    host's memory. Deprecated aliases are mapped (with a warning)."""
    for old, new in DEPRECATED.items():
        if old in kwargs:
            value = kwargs.pop(old)
            warnings.warn(f"'{old}' is deprecated, use '{new}' instead.", DeprecationWarning, stacklevel=4)
            if new == "num_cpus_worker_node":
                num_cpus_worker_node = value if num_cpus_worker_node is None else num_cpus_worker_node
            elif new == "num_gpus_worker_node":
                num_gpus_worker_node = value if num_gpus_worker_node is None else num_gpus_worker_node
            elif object_store_memory_worker_node is None:
                object_store_memory_worker_node = value
    for old, hint in REMOVED.items():
        if old in kwargs:
            raise ValueError(f"'{old}' was removed from setup_ray_cluster: {hint}.")
    if kwargs:
        raise TypeError(f"setup_ray_cluster() got unexpected keyword argument(s) {sorted(kwargs)}.")

    if max_worker_nodes != MAX_NUM_WORKER_NODES:
        _int_arg("max_worker_nodes", max_worker_nodes, 1, 2, allow_none=False)
    min_nodes = _int_arg("min_worker_nodes", min_worker_nodes, 0, 0)
    if min_nodes is not None and max_worker_nodes != MAX_NUM_WORKER_NODES and min_nodes > max_worker_nodes:  # type: ignore[operator]
        raise ValueError(
            f"min_worker_nodes={min_nodes} is more than max_worker_nodes={max_worker_nodes}; use "
            f"min_worker_nodes<={max_worker_nodes} (smaller autoscales between the two) or None (no autoscaling)."
        )
    speed = _positive_number("autoscale_upscaling_speed", autoscale_upscaling_speed, 1.0, zero_ok=False)
    idle = _positive_number("autoscale_idle_timeout_minutes", autoscale_idle_timeout_minutes, 1.0, zero_ok=True)
    sizes = {
        name: _memory_arg(name, value) for name, value in (
            ("memory_worker_node", memory_worker_node), ("object_store_memory_worker_node", object_store_memory_worker_node),
            ("memory_head_node", memory_head_node), ("object_store_memory_head_node", object_store_memory_head_node))
    }
    if callable(known_options):
        known_options = known_options() if (head_node_options or worker_node_options) else ()
    args = SetupArgs(
        max_worker_nodes=max_worker_nodes,  # type: ignore[arg-type]
        min_worker_nodes=min_nodes,
        num_cpus_worker_node=_int_arg("num_cpus_worker_node", num_cpus_worker_node, 1, 1),
        num_gpus_worker_node=_int_arg("num_gpus_worker_node", num_gpus_worker_node, 0, 0),
        num_cpus_head_node=_int_arg("num_cpus_head_node", num_cpus_head_node, 0, 0),
        num_gpus_head_node=_int_arg("num_gpus_head_node", num_gpus_head_node, 0, 0),
        memory_worker_node=sizes["memory_worker_node"],
        memory_head_node=sizes["memory_head_node"],
        object_store_memory_worker_node=sizes["object_store_memory_worker_node"],
        object_store_memory_head_node=sizes["object_store_memory_head_node"],
        upscaling_speed=speed,
        idle_timeout_minutes=idle,
        start_timeout=start_timeout,
        is_global=is_global,
        ray_temp_root_dir=ray_temp_root_dir,  # type: ignore[arg-type]  (its directory is checked by the api)
        collect_log_to_path=collect_log_to_path,  # type: ignore[arg-type]
        strict_mode=strict_mode,  # type: ignore[arg-type]
        head_options=validate_node_options(head_node_options, argument="head_node_options",  # type: ignore[arg-type]
                                           blocked=HEAD_BLOCKED_KEYS, known=known_options),
        worker_options=validate_node_options(worker_node_options, argument="worker_node_options",  # type: ignore[arg-type]
                                             blocked=WORKER_BLOCKED_KEYS, known=known_options),
    )
    if not isinstance(strict_mode, bool):
        raise ValueError(f"strict_mode={strict_mode!r} must be True or False.")
    for name, value in sizes.items():
        if value is not None and value > host_memory * 0.8:
            raise ValueError(
                f"{name}={value} ({format_bytes(value)}) is more than 80% of this host's memory "
                f"({format_bytes(host_memory)}); use at most {int(host_memory * 0.8)}."
            )
    return args
