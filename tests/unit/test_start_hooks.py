"""Start hooks, Databricks settings and the short temp-dir alias: pure rules, no Spark, no Ray."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

import ray_on_spark
from helpers import ray_processes
from ray_on_spark.on_spark import databricks, hooks, plan
from ray_on_spark.on_spark.arguments import check_arguments
from ray_on_spark.runtime.private import RAY_TEMP_DIR_MAX_CHARS, short_alias


@pytest.fixture
def hook_module(tmp_path, monkeypatch):
    """A module ``user_hooks`` on sys.path with a Ray-style hook (no-argument constructor, as Ray calls it)."""
    (tmp_path / "user_hooks.py").write_text(textwrap.dedent("""
        class NoArgHook:
            def custom_environment_variables(self):
                return {"FROM_HOOK": 1}

        class FlagHook:
            def __init__(self, is_global):
                self.seen = is_global

        class Broken:
            def __init__(self):
                raise RuntimeError("no licence")

        not_a_class = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "user_hooks"
    sys.modules.pop("user_hooks", None)


def test_user_hook_class_is_constructed_as_ray_does_and_may_omit_methods(hook_module):
    hook = hooks.load_start_hook(False, {hooks.START_HOOK_ENV: f"{hook_module}.NoArgHook"})
    assert hook.is_global is False  # set for it, as the base class would
    assert hooks.environment(hook) == {"FROM_HOOK": "1"}
    assert hooks.call(hook, "on_spark_job_created", "g") is None  # a method it lacks is skipped
    flagged = hooks.load_start_hook(True, {hooks.START_HOOK_ENV: f"{hook_module}.FlagHook"})
    assert flagged.seen is True


@pytest.mark.parametrize("value,expected", [
    ("NoDots", "must name a class as 'package.module.ClassName'"),
    ("no_such_module_xyz.Hook", "module 'no_such_module_xyz' cannot be imported"),
    ("user_hooks.Missing", "has no class 'Missing'"),
    ("user_hooks.not_a_class", "has no class 'not_a_class'"),
    ("user_hooks.Broken", "constructing Broken failed (RuntimeError: no licence)"),
])
def test_bad_start_hook_is_refused_naming_the_variable(hook_module, value, expected):
    with pytest.raises(ValueError) as err:
        hooks.load_start_hook(False, {hooks.START_HOOK_ENV: value})
    assert f"RAY_ON_SPARK_START_HOOK={value!r}" in str(err.value)
    assert expected in str(err.value)


def test_bad_start_hook_stops_setup_before_anything_starts(hook_module, monkeypatch):
    import ray  # noqa: F401  (imported before timing)

    monkeypatch.setenv(hooks.START_HOOK_ENV, "user_hooks.Missing")
    before = ray_processes()
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="RAY_ON_SPARK_START_HOOK"):
        ray_on_spark.setup_ray_cluster(max_worker_nodes=1)
    assert time.monotonic() - t0 < 1.0
    assert ray_processes() == before


def test_databricks_runtime_gets_the_databricks_hook_and_elsewhere_the_base():
    assert type(hooks.load_start_hook(False, {})) is hooks.RayOnSparkStartHook
    db = hooks.load_start_hook(False, {"DATABRICKS_RUNTIME_VERSION": "15.4"})
    assert isinstance(db, databricks.DatabricksStartHook)
    assert db.autoshutdown_minutes == 30.0


@pytest.mark.parametrize("raw", ["-1", "soon", "nan", "inf"])
def test_autoshutdown_minutes_refuses_what_is_not_a_number_of_minutes(raw):
    with pytest.raises(ValueError, match=f"DATABRICKS_RAY_ON_SPARK_AUTOSHUTDOWN_MINUTES={raw!r} must be"):
        hooks.load_start_hook(False, {"DATABRICKS_RUNTIME_VERSION": "15.4", databricks.AUTOSHUTDOWN_ENV: raw})


def test_autoshutdown_is_never_for_the_global_cluster_even_when_set():
    env = {"DATABRICKS_RUNTIME_VERSION": "15.4", databricks.AUTOSHUTDOWN_ENV: "0.1"}
    assert hooks.load_start_hook(False, env).autoshutdown_minutes == 0.1
    assert hooks.load_start_hook(True, env).autoshutdown_minutes == 0.0


def test_proxy_url_uses_the_workspaces_own_host_on_every_cloud():
    path = databricks.proxy_path("2761604089493481", "0311-160038-vjuv0ah9", 9123)
    assert path == "/driver-proxy/o/2761604089493481/0311-160038-vjuv0ah9/9123/"
    assert databricks.proxy_url("adb-2761604089493481.1.azuredatabricks.net", path) == \
        "https://adb-2761604089493481.1.azuredatabricks.net" + path
    assert databricks.proxy_url("https://1234.5.gcp.databricks.com/", path) == "https://1234.5.gcp.databricks.com" + path
    assert databricks.proxy_url(None, path) == path


def test_databricks_hook_passes_the_drivers_credentials_and_gloo_interface():
    env = {"DATABRICKS_RUNTIME_VERSION": "15.4", "DATABRICKS_HOST": "https://h", "DATABRICKS_TOKEN": "t",
           "GLOO_SOCKET_IFNAME": "ens5"}
    extra = hooks.environment(hooks.load_start_hook(False, env))
    assert extra == {"GLOO_SOCKET_IFNAME": "ens5", "DISABLE_MLFLOW_INTEGRATION": "TRUE",
                     "DATABRICKS_HOST": "https://h", "DATABRICKS_TOKEN": "t"}


def _facts(on_databricks: bool) -> plan.SparkFacts:
    return plan.SparkFacts(master_kind="standalone", task_cpus=1, task_gpus=0, executor_gpus_configured=False,
                           dynamic_allocation=False, driver_gpu_addresses=(), driver_host="10.1.2.3",
                           driver_host_cpus=4, executor_footprint=2**30, driver_memory=2**30,
                           on_databricks=on_databricks)


@pytest.mark.parametrize("on_databricks,host,ports", [(False, "127.0.0.1", None), (True, "10.1.2.3", (9000, 10000))])
def test_dashboard_listens_where_its_users_reach_it(on_databricks, host, ports):
    """Loopback off Databricks; on it, the driver's IP (where the driver proxy connects), in the proxy's ports."""
    args = check_arguments(known_options=["log_style"], host_memory=2**34, max_worker_nodes=1)
    facts = _facts(on_databricks)
    cluster = plan.plan_cluster(args, facts, plan.worker_shape(args, facts), plan.SlotFacts(1, 1, 1))
    assert (cluster.head.dashboard_host, cluster.head.dashboard_port_range) == (host, ports)


def test_short_alias_only_for_temp_dirs_too_long_for_rays_sockets(tmp_path):
    short = "/tmp/r"
    assert short_alias(short) is None
    deep = tmp_path / ("x" * 48) / "ros-1234abcd-w0-abcdefgh" / "r"
    alias = short_alias(str(deep))
    try:
        assert alias is not None and len(alias) <= RAY_TEMP_DIR_MAX_CHARS
        assert os.path.realpath(alias) == str(deep) and deep.is_dir()
    finally:
        os.unlink(alias)


def test_idle_time_that_cannot_be_read_turns_auto_shutdown_off_and_says_so(monkeypatch, caplog):
    """The emulated runtime's entry point (tests/integration/emulated_databricks) with its idle time broken."""
    emulation = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration",
                             "emulated_databricks")
    monkeypatch.syspath_prepend(emulation)
    import dbruntime

    monkeypatch.setattr(dbruntime.ENTRY, "broken", True)
    hook = hooks.load_start_hook(False, {"DATABRICKS_RUNTIME_VERSION": "15.4", databricks.AUTOSHUTDOWN_ENV: "5"})
    with caplog.at_level("INFO", logger="ray_on_spark"):
        hook.on_cluster_created(object())  # no watcher is started: the cluster object is never read
    assert "the notebook's idle time cannot be read" in caplog.text and "auto-shutdown is off" in caplog.text
    sys.modules.pop("dbruntime", None)


def test_only_a_hook_that_uses_a_moment_makes_setup_wait_for_it():
    """Setup waits for the dashboard only when the hook does something once it is up."""
    from ray.util.spark.start_hook_base import RayOnSparkStartHook as RaysBase

    class Quiet(RaysBase):
        pass

    assert not hooks.overrides(hooks.RayOnSparkStartHook(), "on_ray_dashboard_created")
    assert not hooks.overrides(Quiet(False), "on_ray_dashboard_created")
    assert not hooks.overrides(object(), "on_ray_dashboard_created")
    assert hooks.overrides(databricks.DatabricksStartHook(False, {}), "on_ray_dashboard_created")
