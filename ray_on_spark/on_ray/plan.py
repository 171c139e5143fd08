"""Spark on Ray (RayDP mode): checking ``init_spark``'s arguments and planning the cluster.

Pure functions, no Spark or Ray calls, so every rule is unit-tested in milliseconds:
what a user passes becomes an :class:`ExecutorPlan` (or a ``ValueError`` that names the
argument, the value and a value that would work), and the plan gives the Ray
placement-group bundles and the Spark confs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from ray_on_spark.runtime.restarts import RestartPolicy
from ray_on_spark.runtime.units import GIB, MIB, format_bytes, parse_duration, parse_memory

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
    "spark.authenticate": None,
    "spark.authenticate.secret": None,
}


#: Spark's keys for how many executor failures an application tolerates, and over what window
#: (``spark.executor.maxNumFailures``, ``spark.executor.failuresValidityInterval``; YARN and
#: Kubernetes read them too).  A lost executor is replaced while the failures within the window
#: stay at or below the maximum.
MAX_FAILURES_CONF = "spark.executor.maxNumFailures"
FAILURES_WINDOW_CONF = "spark.executor.failuresValidityInterval"
#: Our default window; Spark's own (unset) counts failures for the application's whole life, which
#: would end replacement in a long session that loses an executor now and then.
DEFAULT_FAILURES_WINDOW_S = 600.0


def restart_policy(configs: Mapping[str, str], num_executors: int) -> RestartPolicy:
    """The policy from the user's confs; Spark's default maximum is ``max(2 x num_executors, 3)``."""
    raw = configs.get(MAX_FAILURES_CONF)
    if raw is None:
        most = max(2 * num_executors, 3)
    else:
        try:
            most = int(raw)
        except ValueError:
            most = -1
        if most < 0:
            raise ValueError(f"configs[{MAX_FAILURES_CONF!r}]={raw!r} must be a whole number >= 0 "
                             f"(0: never replace a lost executor), e.g. '{max(2 * num_executors, 3)}'.")
    window = DEFAULT_FAILURES_WINDOW_S
    if FAILURES_WINDOW_CONF in configs:
        try:
            window = parse_duration(configs[FAILURES_WINDOW_CONF], name=f"configs[{FAILURES_WINDOW_CONF!r}]")
        except ValueError as e:
            raise ValueError(str(e)) from None
        if window <= 0:
            raise ValueError(f"configs[{FAILURES_WINDOW_CONF!r}]={configs[FAILURES_WINDOW_CONF]!r} must be "
                             f"longer than 0, e.g. '10min'.")
    return RestartPolicy(most, window)


#: Spark's dynamic allocation confs that the plan reads (the others, such as the idle timeouts,
#: are Spark's own business and pass through).
DYNAMIC_CONF = "spark.dynamicAllocation.enabled"
MIN_EXECUTORS_CONF = "spark.dynamicAllocation.minExecutors"
MAX_EXECUTORS_CONF = "spark.dynamicAllocation.maxExecutors"
INITIAL_EXECUTORS_CONF = "spark.dynamicAllocation.initialExecutors"
SHUFFLE_TRACKING_CONF = "spark.dynamicAllocation.shuffleTracking.enabled"
SHUFFLE_SERVICE_CONF = "spark.shuffle.service.enabled"


@dataclass(frozen=True)
class DynamicAllocation:
    """Spark's executor bounds under ``spark.dynamicAllocation.enabled=true``.

    Spark's own ``ExecutorAllocationManager`` decides how many executors the application wants;
    the session (:mod:`ray_on_spark.on_ray.dynamic`) turns that target into executor actors.
    ``initial`` is Spark's rule: the largest of ``minExecutors``, ``initialExecutors`` and
    ``spark.executor.instances`` (``num_executors``).  ``maximum`` None: Spark's default, no cap
    (Ray's room is the cap then: requests beyond it wait).
    """

    minimum: int
    maximum: Optional[int]
    initial: int


def _count_conf(configs: Mapping[str, str], key: str, default: Optional[int]) -> Optional[int]:
    raw = configs.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"configs[{key!r}]={raw!r} must be a whole number of executors >= 0, e.g. '2'.")
    return value


def dynamic_allocation(configs: Mapping[str, str], num_executors: int) -> Optional[DynamicAllocation]:
    """The bounds when ``configs`` turn dynamic allocation on, else None; bad values are refused here."""
    raw = configs.get(DYNAMIC_CONF, "false").strip().lower()
    if raw not in ("true", "false"):
        raise ValueError(f"configs[{DYNAMIC_CONF!r}]={configs[DYNAMIC_CONF]!r} must be 'true' or 'false'.")
    if raw == "false":
        return None
    if configs.get(SHUFFLE_SERVICE_CONF, "false").strip().lower() == "true":
        raise ValueError(
            f"configs[{SHUFFLE_SERVICE_CONF!r}]='true' cannot work here: no external shuffle service runs beside "
            f"executors in Ray actors, so they could not register with it. Leave it unset: with {DYNAMIC_CONF}=true, "
            f"{SHUFFLE_TRACKING_CONF}=true keeps an executor while it holds shuffle data a job may read.")
    low = _count_conf(configs, MIN_EXECUTORS_CONF, 0)
    high = _count_conf(configs, MAX_EXECUTORS_CONF, None)
    assert low is not None
    if high is not None and (high < 1 or high < low):
        raise ValueError(
            f"configs[{MAX_EXECUTORS_CONF!r}]={configs[MAX_EXECUTORS_CONF]!r} must be >= 1 and >= "
            f"{MIN_EXECUTORS_CONF}={low}, e.g. '{max(low, 2)}'.")
    initial = max(low, _count_conf(configs, INITIAL_EXECUTORS_CONF, 0) or 0, num_executors)
    if high is not None and initial > high:
        raise ValueError(
            f"num_executors={num_executors} (with {MIN_EXECUTORS_CONF}/{INITIAL_EXECUTORS_CONF}) starts "
            f"{initial} executors, more than {MAX_EXECUTORS_CONF}={high}; start with at most {high}, "
            f"e.g. num_executors=0 to let Spark add executors as jobs need them.")
    return DynamicAllocation(low, high, initial)


#: RayDP's confs for what each executor's actor reserves in Ray: ``<prefix>cpu`` (CPUs, fractional
#: allowed; default ``executor_cores``) and ``<prefix><name>`` (a custom Ray resource).  The second
#: prefix is RayDP's older spelling.
ACTOR_RESOURCE_PREFIXES = ("spark.ray.raydp_spark_executor.actor.resource.", "spark.ray.actor.resource.")
#: Spark's own conf for each executor's GPUs: the actor reserves that many of Ray's GPUs.
GPU_AMOUNT_CONF = "spark.executor.resource.gpu.amount"


@dataclass(frozen=True)
class ActorResources:
    """What one executor's actor (and its placement-group bundle) reserves in Ray besides memory."""

    cpus: float
    gpus: int = 0
    custom: Dict[str, float] = field(default_factory=dict)


def _amount(key: str, value: str, example: str) -> float:
    try:
        amount = float(value)
    except ValueError:
        amount = -1.0
    if not amount > 0:
        raise ValueError(f"configs[{key!r}]={value!r} must be a number > 0, e.g. '{example}'.")
    return amount


def actor_resources(configs: Mapping[str, str], executor_cores: int) -> ActorResources:
    """RayDP's ``spark.ray.*`` actor resources and Spark's GPU amount from ``configs``.

    Any other ``spark.ray.*`` key is RayDP's and has no meaning here: it is refused by name
    rather than dropped, so that a migrated notebook does not silently lose a setting.
    """
    cpus: float = float(executor_cores)
    custom: Dict[str, float] = {}
    for key, value in configs.items():
        prefix = next((p for p in ACTOR_RESOURCE_PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            name = key[len(prefix):]
            if name == "cpu":
                cpus = _amount(key, value, "0.5")
            elif not name or name.lower() in ("gpu", "memory"):
                raise ValueError(
                    f"configs[{key!r}] cannot be set: use {GPU_AMOUNT_CONF} for GPUs and executor_memory for "
                    "memory; this prefix takes 'cpu' or a custom Ray resource's name.")
            else:
                custom[name] = _amount(key, value, "1")
        elif key.startswith("spark.ray."):
            raise ValueError(
                f"configs[{key!r}] is a RayDP setting that ray_on_spark does not implement; remove it. Supported: "
                f"{ACTOR_RESOURCE_PREFIXES[0]}cpu and {ACTOR_RESOURCE_PREFIXES[0]}<custom resource> (also under "
                f"{ACTOR_RESOURCE_PREFIXES[1]}), and Spark's {GPU_AMOUNT_CONF}.")
    gpus = 0
    if GPU_AMOUNT_CONF in configs:
        raw = configs[GPU_AMOUNT_CONF]
        try:
            gpus = int(raw)
        except ValueError:
            gpus = 0
        if gpus < 1:
            raise ValueError(f"configs[{GPU_AMOUNT_CONF!r}]={raw!r} must be a whole number of GPUs >= 1, e.g. '1'.")
    return ActorResources(cpus, gpus, custom)


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
    restarts: RestartPolicy = RestartPolicy(3, DEFAULT_FAILURES_WINDOW_S)
    #: What each actor reserves besides its heap (default: executor_cores CPUs); None: that default.
    resources: Optional[ActorResources] = None
    #: Spark's dynamic allocation bounds; None: a fixed ``num_executors`` on a placement group.
    dynamic: Optional[DynamicAllocation] = None

    @property
    def initial_executors(self) -> int:
        """How many executors init_spark starts with (dynamic allocation: Spark's initial count)."""
        return self.dynamic.initial if self.dynamic is not None else self.num_executors

    @property
    def actor(self) -> ActorResources:
        return self.resources or ActorResources(float(self.executor_cores))

    @property
    def executor_memory_mib(self) -> int:
        return self.executor_memory // MIB

    def bundle(self) -> Dict[str, float]:
        """One executor's placement-group bundle: its actor's CPUs, GPUs, custom resources and its heap."""
        a = self.actor
        out = {"CPU": a.cpus, "memory": float(self.executor_memory)}
        if a.gpus:
            out["GPU"] = float(a.gpus)
        out.update(a.custom)
        return out

    def bundles(self) -> List[Dict[str, float]]:
        """One placement-group bundle per executor (:meth:`bundle`), reserved in Ray."""
        return [self.bundle()] * self.num_executors

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
        })
        if self.dynamic is None:
            # What the standalone master would grant: exactly num_executors executors' cores.
            confs["spark.cores.max"] = str(self.executor_cores * self.num_executors)
            confs[DYNAMIC_CONF] = "false"
        else:
            confs["spark.executor.instances"] = str(self.num_executors)  # one of Spark's initial-count inputs
        if self.dynamic is not None:
            # No external shuffle service here (refused in the plan): Spark keeps an executor while it
            # holds shuffle data that a live job may read (Spark 4's default; 3.5 refuses to start without it).
            confs.setdefault(SHUFFLE_TRACKING_CONF, "true")
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
    if configs is None:
        configs = {}
    dynamic_on = isinstance(configs, Mapping) and str(configs.get(DYNAMIC_CONF, "")).strip().lower() == "true"
    if dynamic_on and isinstance(num_executors, int) and not isinstance(num_executors, bool) and num_executors >= 0:
        n = num_executors  # 0 allowed: Spark adds executors as jobs need them
    elif dynamic_on:
        raise ValueError(f"num_executors={num_executors!r} must be an integer >= 0 with dynamic allocation "
                         "(Spark's initial executors), e.g. num_executors=0.")
    else:
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
    dynamic = dynamic_allocation(clean, n)
    if dynamic is not None and (has_placement_group or placement_group_strategy is not None):
        raise ValueError(
            f"{DYNAMIC_CONF}=true cannot be combined with a placement group ("
            f"{'placement_group' if has_placement_group else f'placement_group_strategy={placement_group_strategy!r}'}): "
            "a placement group reserves a fixed number of executors up front, which is what dynamic allocation "
            "avoids. Drop the placement group argument, or set a fixed num_executors without dynamic allocation.")
    # Spark's default failure budget scales with the executors there can be: the fixed count, or
    # under dynamic allocation its maximum (its initial count when unbounded).
    most_executors = n if dynamic is None else max(n, dynamic.maximum or dynamic.initial)
    restarts = restart_policy(clean, most_executors)
    resources = actor_resources(clean, cores)
    return ExecutorPlan(
        dynamic=dynamic,
        restarts=restarts,
        resources=resources,
        app_name=app_name,
        num_executors=n,
        executor_cores=cores,
        executor_memory=memory,
        configs=clean,
        strategy=placement_group_strategy or "SPREAD",
        bundle_indexes=indexes,
        enable_hive=bool(enable_hive),
    )


#: How long init_spark waits for Ray to place the executors when the user does not say.
DEFAULT_RESERVE_TIMEOUT_S = 30.0


def check_reserve_timeout(value: object) -> float:
    """``reserve_timeout_s``: how long init_spark waits for Ray to place the executors (seconds > 0; None: 30)."""
    if value is None:
        return DEFAULT_RESERVE_TIMEOUT_S
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"reserve_timeout_s={value!r} must be a number of seconds > 0, e.g. reserve_timeout_s=300 "
                         f"(how long init_spark waits for Ray, or its autoscaler, to make room).")
    return float(value)


def check_fits(plan: ExecutorPlan, total: Mapping[str, float], per_node_cpus: Sequence[float],
               may_grow: bool = False) -> None:
    """Refuse a plan the Ray cluster can never hold (what it could hold *now* is Ray's to say).

    ``may_grow``: the user said how long to wait (``reserve_timeout_s``), taking the cluster to be
    able to grow (an autoscaler adds nodes): nothing is refused for its present size.
    """
    if may_grow:
        return
    # Under dynamic allocation the initial count may be 0: one executor must still fit.
    count = max(1, plan.initial_executors)
    each_cpus = plan.actor.cpus
    what = (f"executor_cores={plan.executor_cores}" if each_cpus == plan.executor_cores
            else f"{ACTOR_RESOURCE_PREFIXES[0]}cpu={each_cpus:g}")
    cpus = count * each_cpus
    have = total.get("CPU", 0.0)
    if cpus > have + 1e-9:
        fit = max(1, int(have // each_cpus)) if have >= each_cpus else 0
        hint = (f"use num_executors<={fit}" if fit else f"use executor_cores<={int(have)}") + " or a bigger Ray cluster"
        raise ValueError(
            f"num_executors={count} x {what} = {cpus:g} CPUs, but this "
            f"Ray cluster has {have:g} CPUs in all; {hint}."
        )
    biggest = max(per_node_cpus, default=0.0)
    if each_cpus > biggest:
        raise ValueError(
            f"{what} is more than any Ray node has (the biggest has {biggest:g} CPUs); "
            f"use executor_cores<={int(biggest)}."
        )
    wanted = {k: v for k, v in plan.bundle().items() if k not in ("CPU", "memory")}
    for name, each in wanted.items():
        need, have_it = each * count, total.get(name, 0.0)
        if need > have_it:
            conf = GPU_AMOUNT_CONF if name == "GPU" else f"{ACTOR_RESOURCE_PREFIXES[0]}{name}"
            raise ValueError(
                f"num_executors={count} x {conf}={each:g} = {need:g} {name}, but this Ray cluster has "
                f"{have_it:g} {name} in all; use fewer executors, a smaller {conf}, or Ray nodes with that resource.")
    memory = count * plan.executor_memory
    have_mem = total.get("memory", 0.0)
    if memory > have_mem:
        raise ValueError(
            f"num_executors={count} x executor_memory={format_bytes(plan.executor_memory)} = "
            f"{format_bytes(memory)}, but this Ray cluster has {format_bytes(int(have_mem))} of memory to give; "
            f"use a smaller executor_memory (e.g. '{max(1, int(have_mem / count / GIB))}GB') or fewer executors."
        )
