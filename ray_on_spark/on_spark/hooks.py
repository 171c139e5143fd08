"""Start hooks: user code called at the moments Ray 2.60's ``ray.util.spark`` calls its hooks.

``RAY_ON_SPARK_START_HOOK=module.Class`` names a class with Ray's hook methods; a Ray hook
(a subclass of ``ray.util.spark.start_hook_base.RayOnSparkStartHook``) works unchanged.
Without it, the built-in Databricks hook runs on a Databricks runtime
(``DATABRICKS_RUNTIME_VERSION`` set, as Ray detects it) and the no-op base elsewhere.

The moments, as in Ray:

* ``get_default_temp_root_dir()`` -- when ``ray_temp_root_dir`` is not given (not for a global cluster);
* ``custom_environment_variables()`` -- before the head starts: added to every Ray node's environment;
* ``on_spark_job_created(job_group)`` -- each Spark job group that holds worker nodes, when submitted;
* ``on_ray_dashboard_created(port)`` -- once the head's dashboard answers;
* ``on_cluster_created(cluster)`` -- once the cluster is ready (``cluster.is_shutdown`` tells a watcher when to stop).

The class is loaded before anything starts: a bad path is a ``ValueError`` naming the variable.
A hook that raises during setup fails the setup, which then stops everything it started.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from typing import Any, Dict, Mapping, Optional

logger = logging.getLogger(__name__)

START_HOOK_ENV = "RAY_ON_SPARK_START_HOOK"


class RayOnSparkStartHook:
    """The hook methods and their defaults (Ray's ``RayOnSparkStartHook``, method for method).

    ``get_default_temp_root_dir`` returns None here: the system's temp dir (Ray's base says "/tmp").
    """

    def __init__(self, is_global: bool = False):
        self.is_global = is_global

    def get_default_temp_root_dir(self) -> Optional[str]:
        return None

    def on_ray_dashboard_created(self, port: int) -> None:
        pass

    def on_cluster_created(self, ray_cluster_handler: Any) -> None:
        pass

    def on_spark_job_created(self, job_group_id: str) -> None:
        pass

    def custom_environment_variables(self) -> Dict[str, str]:
        return {}


def _construct(cls: type, is_global: bool) -> Any:
    """``cls(is_global)`` when its constructor takes an argument (Ray's base does), else ``cls()`` (as Ray calls it)."""
    try:
        inspect.signature(cls).bind(is_global)
        takes_flag = True
    except (TypeError, ValueError):
        takes_flag = False
    hook = cls(is_global) if takes_flag else cls()
    if not hasattr(hook, "is_global"):
        try:
            hook.is_global = is_global
        except AttributeError:  # __slots__ or a property: the hook does without
            pass
    return hook


def load_start_hook(is_global: bool, environ: Optional[Mapping[str, str]] = None) -> Any:
    """The hook for this setup: the user's class, else Databricks' on a Databricks runtime, else the base.

    Raises ``ValueError`` naming ``RAY_ON_SPARK_START_HOOK`` when its class cannot be loaded
    or constructed (and the Databricks hook's own errors for a bad setting of its variables).
    """
    env = os.environ if environ is None else environ
    path = env.get(START_HOOK_ENV, "").strip()
    if path:
        module_name, _, class_name = path.rpartition(".")
        if not module_name or not class_name:
            raise ValueError(f"{START_HOOK_ENV}={path!r} must name a class as 'package.module.ClassName'.")
        try:
            module = importlib.import_module(module_name)
        except Exception as e:
            raise ValueError(f"{START_HOOK_ENV}={path!r}: module {module_name!r} cannot be imported "
                             f"({type(e).__name__}: {e}); put it on this Python's path or fix the name.") from None
        cls = getattr(module, class_name, None)
        if not inspect.isclass(cls):
            raise ValueError(f"{START_HOOK_ENV}={path!r}: module {module_name!r} has no class {class_name!r}; "
                             "name a class with Ray's start hook methods (see ray_on_spark.on_spark.hooks).")
        try:
            hook = _construct(cls, is_global)
        except Exception as e:
            raise ValueError(f"{START_HOOK_ENV}={path!r}: constructing {class_name} failed "
                             f"({type(e).__name__}: {e}).") from None
        logger.info("start hook: %s", path)
        return hook
    from ray_on_spark.on_spark import databricks

    if databricks.in_databricks_runtime(env):
        return databricks.DatabricksStartHook(is_global, env)
    return RayOnSparkStartHook(is_global)


def overrides(hook: Any, method: str) -> bool:
    """Whether ``hook`` does something at ``method``'s moment (not only our base's, or Ray's, no-op)."""
    function = getattr(type(hook), method, None)
    if not callable(function) or function is getattr(RayOnSparkStartHook, method):
        return False
    try:
        from ray.util.spark.start_hook_base import RayOnSparkStartHook as RaysBase
    except ImportError:  # pragma: no cover  (ray[default] has it)
        return True
    return function is not getattr(RaysBase, method, None)


def call(hook: Any, method: str, *args: Any) -> Any:
    """``hook.method(*args)`` when the hook has that method (a user class need not define them all)."""
    function = getattr(hook, method, None)
    return function(*args) if callable(function) else None


def environment(hook: Any) -> Dict[str, str]:
    """The hook's ``custom_environment_variables()``, checked: names and values are strings."""
    extra = call(hook, "custom_environment_variables") or {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"the start hook's custom_environment_variables() returned {type(extra).__name__}; "
                        "it must return a dict of str to str.")
    return {str(k): str(v) for k, v in extra.items()}
