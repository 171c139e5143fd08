"""Spark on Ray (RayDP mode): checking ``init_spark``'s arguments and planning the cluster.

Pure functions, no Spark or Ray calls, so every rule is unit-tested in milliseconds:
what a user passes becomes an :class:`ExecutorPlan` (or a ``ValueError`` that names the
argument, the value and a value that would work), and the plan gives the Ray
placement-group bundles and the Spark confs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from ray_on_spark.runtime.units import GIB, MIB, format_bytes, parse_memory

#: Spark refuses executors below 1.5 x its 300 MiB reserved memory.
MIN_EXECUTOR_MEMORY = 450 * MIB

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

#: Spark confs that init_spark sets from its own arguments; the value names the argument.
OWNED_CONFS: Dict[str, Optional[str]] = {
    "spark.master": None,
    "spark.app.name": "app_name",
    "spark.executor.instances": "num_executors",
    "spark.executor.cores": "executor_cores",
    "spark.executor.memory": "executor_memory",
    "spark.cores.max": "num_executors and executor_cores",
    "spark.dynamicAllocation.enabled": None,
    "spark.authenticate": None,
    "spark.authenticate.secret": None,
}


@dataclass(frozen=True)
class ExecutorPlan:
    """What init_spark will start: ``num_executors`` Ray actors, one Spark executor each."""

    app_name: str
    num_executors: int
    executor_cores: int
    executor_memory: int  # bytes
    configs: Dict[str, str] = field(default_factory=dict)
    strategy: str = "SPREAD"
    bundle_indexes: Optional[List[int]] = None  # set when the user brings a placement group
    enable_hive: bool = False

    @property
    def executor_memory_mib(self) -> int:
        return self.executor_memory // MIB

    def bundles(self) -> List[Dict[str, float]]:
        """One placement-group bundle per executor: its cores and its heap, reserved in Ray."""
        return [{"CPU": float(self.executor_cores), "memory": float(self.executor_memory)}] * self.num_executors

    def spark_confs(self, master_url: str, driver_host: str, python: str) -> Dict[str, str]:
        """The SparkSession's confs: user configs first, then the ones this plan owns."""
        confs = {
            "spark.ui.enabled": "false",  # not opened to the network unless asked (configs can)
            "spark.ui.showConsoleProgress": "false",
            "spark.pyspark.python": python,
            "spark.driver.host": driver_host,
            "spark.driver.bindAddress": driver_host,
            "spark.sql.execution.arrow.pyspark.enabled": "true",
        }
        confs.update(self.configs)
        confs.update({
            "spark.master": master_url,
            "spark.app.name": self.app_name,
            "spark.executor.cores": str(self.executor_cores),
            "spark.executor.memory": f"{self.executor_memory_mib}m",
            # One executor per worker (each worker has exactly one executor's cores), so
            # the app gets exactly num_executors executors.
            "spark.cores.max": str(self.executor_cores * self.num_executors),
            "spark.dynamicAllocation.enabled": "false",
        })
        if self.enable_hive:
            confs["spark.sql.catalogImplementation"] = "hive"
        return confs


def _positive_int(name: str, value: object, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer >= 1, e.g. {name}={example}.")
    if value < 1:
        raise ValueError(f"{name}={value!r} must be >= 1, e.g. {name}={example}.")
    return value


def plan_executors(
    app_name: object,
    num_executors: object,
    executor_cores: object,
    executor_memory: object,
    configs: Optional[Mapping[str, object]] = None,
    placement_group_strategy: Optional[str] = None,
    placement_group_bundle_indexes: Optional[Sequence[int]] = None,
    has_placement_group: bool = False,
    enable_hive: bool = False,
) -> ExecutorPlan:
    """Check init_spark's arguments (without looking at Ray) and return the plan."""
    if not isinstance(app_name, str) or not app_name.strip():
        raise ValueError(f"app_name={app_name!r} must be a non-empty string, e.g. app_name='etl'.")
    n = _positive_int("num_executors", num_executors, 2)
    cores = _positive_int("executor_cores", executor_cores, 1)
    try:
        memory = parse_memory(executor_memory, name="executor_memory")
    except ValueError as e:
        raise ValueError(f"{e} For example executor_memory='1GB'.") from None
    if memory < MIN_EXECUTOR_MEMORY:
        raise ValueError(
            f"executor_memory={executor_memory!r} ({format_bytes(memory)}) is below Spark's minimum of "
            f"{format_bytes(MIN_EXECUTOR_MEMORY)} per executor; use e.g. executor_memory='1GB'."
        )
    if configs is None:
        configs = {}
    if not isinstance(configs, Mapping):
        raise ValueError(
            f"configs={configs!r} must be a dict of Spark confs, e.g. configs={{'spark.sql.shuffle.partitions': '4'}}.")
    clean: Dict[str, str] = {}
    for key, value in configs.items():
        if not isinstance(key, str) or not key.startswith("spark."):
            raise ValueError(f"configs key {key!r} is not a Spark conf; keys look like 'spark.sql.shuffle.partitions'.")
        if key in OWNED_CONFS:
            arg = OWNED_CONFS[key]
            hint = f"use init_spark's argument {arg} instead" if arg else "init_spark sets it itself"
            raise ValueError(f"configs[{key!r}]={value!r} cannot be set here: {hint}.")
        if isinstance(value, bool):
            value = str(value).lower()
        clean[key] = str(value)
    if placement_group_strategy is not None and placement_group_strategy not in STRATEGIES:
        raise ValueError(
            f"placement_group_strategy={placement_group_strategy!r} is not a Ray placement strategy; "
            f"use one of {', '.join(STRATEGIES)} (or None)."
        )
    indexes: Optional[List[int]] = None
    if has_placement_group:
        if placement_group_strategy is not None:
            raise ValueError(
                "placement_group_strategy and placement_group were both given; pass only placement_group "
                "(its strategy was set when it was created)."
            )
        if placement_group_bundle_indexes is None:
            indexes = list(range(n))
        else:
            indexes = list(placement_group_bundle_indexes)
            if len(indexes) != n or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indexes):
                raise ValueError(
                    f"placement_group_bundle_indexes={placement_group_bundle_indexes!r} must list {n} bundle "
                    f"indexes (one per executor), e.g. {list(range(n))}."
                )
    elif placement_group_bundle_indexes is not None:
        raise ValueError(
            "placement_group_bundle_indexes was given without placement_group; pass placement_group=<your "
            "PlacementGroup> too, or drop the indexes."
        )
    return ExecutorPlan(
        app_name=app_name,
        num_executors=n,
        executor_cores=cores,
        executor_memory=memory,
        configs=clean,
        strategy=placement_group_strategy or "SPREAD",
        bundle_indexes=indexes,
        enable_hive=bool(enable_hive),
    )


def check_fits(plan: ExecutorPlan, total: Mapping[str, float], per_node_cpus: Sequence[float]) -> None:
    """Refuse a plan the Ray cluster can never hold (what it could hold *now* is Ray's to say)."""
    cpus = plan.num_executors * plan.executor_cores
    have = total.get("CPU", 0.0)
    if cpus > have:
        fit = max(1, int(have // plan.executor_cores)) if have >= plan.executor_cores else 0
        hint = (f"use num_executors<={fit}" if fit else f"use executor_cores<={int(have)}") + " or a bigger Ray cluster"
        raise ValueError(
            f"num_executors={plan.num_executors} x executor_cores={plan.executor_cores} = {cpus} CPUs, but this "
            f"Ray cluster has {have:g} CPUs in all; {hint}."
        )
    biggest = max(per_node_cpus, default=0.0)
    if plan.executor_cores > biggest:
        raise ValueError(
            f"executor_cores={plan.executor_cores} is more than any Ray node has (the biggest has {biggest:g} CPUs); "
            f"use executor_cores<={int(biggest)}."
        )
    memory = plan.num_executors * plan.executor_memory
    have_mem = total.get("memory", 0.0)
    if memory > have_mem:
        raise ValueError(
            f"num_executors={plan.num_executors} x executor_memory={format_bytes(plan.executor_memory)} = "
            f"{format_bytes(memory)}, but this Ray cluster has {format_bytes(int(have_mem))} of memory to give; "
            f"use a smaller executor_memory (e.g. '{max(1, int(have_mem / plan.num_executors / GIB))}GB') or fewer executors."
        )
