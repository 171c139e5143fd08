"""The built-in start hook for a Databricks runtime: what Ray 2.60's Databricks hook does, corrected.

* **Dashboard link.** A notebook user cannot reach a driver port; the workspace's driver
  proxy serves it at ``/driver-proxy/o/<orgId>/<clusterId>/<port>/``. The ids come from the
  cluster's Spark confs and the host from ``spark.databricks.workspaceUrl`` (Ray hard-codes
  an AWS host, wrong on Azure and GCP). The link is logged and shown with the notebook's
  ``displayHTML``.
* **Idle auto-shutdown.** ``DATABRICKS_RAY_ON_SPARK_AUTOSHUTDOWN_MINUTES`` (default 30, 0 =
  never): when the runtime reports no notebook command for that long, the cluster shuts
  down. Never for a global cluster (other users' work cannot be seen from here).
* **Background job group.** Each worker-node job group is registered with the runtime, so
  cancelling another cell does not cancel the Ray cluster.
* **Temp root and environment.** ``/local_disk0/tmp`` (the big local disk) by default; gloo's
  interface, the MLflow switch and the workspace credentials go to every Ray node.

The runtime's entry point is ``dbruntime.UserNamespaceInitializer``'s, as Ray reaches it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Mapping, Optional

from ray_on_spark.on_spark.hooks import RayOnSparkStartHook

logger = logging.getLogger(__name__)

RUNTIME_VERSION_ENV = "DATABRICKS_RUNTIME_VERSION"
AUTOSHUTDOWN_ENV = "DATABRICKS_RAY_ON_SPARK_AUTOSHUTDOWN_MINUTES"
DEFAULT_AUTOSHUTDOWN_MINUTES = 30.0
#: How often the idle time is read (Ray: 3 s).
AUTOSHUTDOWN_POLL_S = 3.0
#: The big local disk of a Databricks node; Ray's default temp root there.
LOCAL_DISK_TEMP_ROOT = "/local_disk0/tmp"
#: Spark confs a Databricks cluster sets: its org (workspace) id, its id, the workspace's host.
ORG_ID_CONFS = ("spark.databricks.clusterUsageTags.orgId", "spark.databricks.clusterUsageTags.clusterOwnerOrgId")
CLUSTER_ID_CONF = "spark.databricks.clusterUsageTags.clusterId"
WORKSPACE_URL_CONF = "spark.databricks.workspaceUrl"
#: Passed from the driver to every Ray node when set there (MLflow's and the SDK's credentials).
CREDENTIAL_ENVS = ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET")


def in_databricks_runtime(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether this process runs in a Databricks runtime (Ray's test: the runtime version variable is set)."""
    return RUNTIME_VERSION_ENV in (os.environ if environ is None else environ)


def autoshutdown_minutes(environ: Mapping[str, str]) -> float:
    """``DATABRICKS_RAY_ON_SPARK_AUTOSHUTDOWN_MINUTES``, checked: a number >= 0 (0 = never)."""
    raw = environ.get(AUTOSHUTDOWN_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_AUTOSHUTDOWN_MINUTES
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not minutes >= 0 or minutes == float("inf"):
        raise ValueError(f"{AUTOSHUTDOWN_ENV}={raw!r} must be a number of minutes >= 0 (0: never shut down "
                         f"for idleness), e.g. {AUTOSHUTDOWN_ENV}=30.")
    return minutes


def proxy_path(org_id: str, cluster_id: str, port: int) -> str:
    """The driver proxy's path for a driver port (relative to the workspace)."""
    return f"/driver-proxy/o/{org_id}/{cluster_id}/{port}/"


def proxy_url(workspace_url: Optional[str], path: str) -> str:
    """The proxy path on the workspace's own host (``spark.databricks.workspaceUrl``), or the path alone."""
    if not workspace_url:
        return path
    host = workspace_url.strip().rstrip("/")
    if not host.startswith(("https://", "http://")):
        host = "https://" + host
    return host + path


def display_html(html: str) -> bool:
    """Show ``html`` with the notebook's ``displayHTML``; False when this is no Databricks notebook."""
    try:
        import IPython

        shell = IPython.get_ipython()
    except ImportError:
        return False
    function = shell.user_ns.get("displayHTML") if shell is not None else None
    if not callable(function):
        return False
    try:
        function(html)
    except Exception as e:
        logger.debug("displayHTML failed: %s", e)
        return False
    return True


def entry_point() -> Any:
    """The runtime's Spark entry point (idle time, background job groups), as Ray reaches it."""
    from dbruntime import UserNamespaceInitializer

    return UserNamespaceInitializer.getOrCreate().get_spark_entry_point()


class DatabricksStartHook(RayOnSparkStartHook):
    """Ray's Databricks hook, with the workspace's own host, checked settings and logged outcomes."""

    def __init__(self, is_global: bool = False, environ: Optional[Mapping[str, str]] = None):
        super().__init__(is_global)
        self._environ = os.environ if environ is None else environ
        #: Checked now, before anything starts: a bad value is refused naming the variable.
        self.autoshutdown_minutes = 0.0 if is_global else autoshutdown_minutes(self._environ)

    def get_default_temp_root_dir(self) -> Optional[str]:
        return LOCAL_DISK_TEMP_ROOT if os.path.isdir(LOCAL_DISK_TEMP_ROOT) else None

    def on_ray_dashboard_created(self, port: int) -> None:
        from ray_on_spark import spark_env

        sc = spark_env.active_spark().sparkContext
        org_id = next((v for v in (spark_env.conf_get(sc, k) for k in ORG_ID_CONFS) if v), None)
        cluster_id = spark_env.conf_get(sc, CLUSTER_ID_CONF)
        if not org_id or not cluster_id:
            logger.warning("Databricks: the cluster's confs lack %s / %s, so no driver-proxy link to the Ray "
                           "dashboard (port %d on the driver) can be made", ORG_ID_CONFS[0], CLUSTER_ID_CONF, port)
            return
        path = proxy_path(org_id, cluster_id, port)
        url = proxy_url(spark_env.conf_get(sc, WORKSPACE_URL_CONF), path)
        logger.info("Ray dashboard (through the Databricks driver proxy): %s", url)
        display_html(f'<div style="margin-top: 16px;margin-bottom: 16px"><a href="{path}" target="_blank">'
                     "Open the Ray cluster dashboard in a new tab</a></div>")

    def on_spark_job_created(self, job_group_id: str) -> None:
        try:
            entry_point().registerBackgroundSparkJobGroup(job_group_id)
        except Exception as e:
            logger.warning("Databricks: registering the Ray cluster's Spark job group %s as a background job "
                           "failed (%s); cancelling another cell may cancel the Ray cluster", job_group_id, e)

    def on_cluster_created(self, ray_cluster_handler: Any) -> None:
        minutes = self.autoshutdown_minutes
        if self.is_global:
            logger.info("Databricks: a global Ray cluster is never shut down for idleness; "
                        "shutdown_ray_cluster() or detaching the notebook ends it")
            return
        if minutes == 0:
            logger.info("Databricks: %s=0, so the Ray cluster runs until shutdown_ray_cluster() or the notebook "
                        "detaches", AUTOSHUTDOWN_ENV)
            return
        try:
            entry = entry_point()
            entry.getIdleTimeMillisSinceLastNotebookExecution()
        except Exception as e:
            logger.warning("Databricks: the notebook's idle time cannot be read (%s), so auto-shutdown is off; "
                           "call shutdown_ray_cluster() or detach the notebook to end the Ray cluster", e)
            return
        logger.info("Databricks: the Ray cluster shuts down after %g minute(s) without a notebook command "
                    "(%s; 0 = never)", minutes, AUTOSHUTDOWN_ENV)
        threading.Thread(target=_watch_idleness, args=(ray_cluster_handler, entry, minutes),
                         name="ray_on_spark-databricks-idle", daemon=True).start()

    def custom_environment_variables(self) -> Dict[str, str]:
        env = {
            # torch's gloo picks the loopback interface on Databricks nodes unless told (Ray's fix).
            "GLOO_SOCKET_IFNAME": self._environ.get("GLOO_SOCKET_IFNAME", "eth0"),
            # transformers' MLflow callback misbehaves on Databricks (Ray turns it off).
            "DISABLE_MLFLOW_INTEGRATION": self._environ.get("DISABLE_MLFLOW_INTEGRATION", "TRUE"),
        }
        env.update({k: self._environ[k] for k in CREDENTIAL_ENVS if self._environ.get(k)})
        if "DATABRICKS_HOST" not in env or not ("DATABRICKS_TOKEN" in env or "DATABRICKS_CLIENT_SECRET" in env):
            message = ("MLflow inside Ray tasks has no Databricks credentials: set DATABRICKS_HOST and "
                       "DATABRICKS_TOKEN (or DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET) before "
                       "setup_ray_cluster() to pass them to every Ray node.")
            logger.warning("Databricks: %s", message)
            display_html(f"<b style='color:red;'>{message}</b>")
        return env


def _watch_idleness(cluster: Any, entry: Any, minutes: float) -> None:
    """Shut ``cluster`` down once the notebook has been idle for ``minutes`` (if it is still the active one)."""
    limit_ms = minutes * 60_000
    while not cluster.is_shutdown:
        try:
            idle_ms = float(entry.getIdleTimeMillisSinceLastNotebookExecution())
        except Exception as e:
            logger.warning("Databricks: reading the notebook's idle time failed (%s); auto-shutdown is off now", e)
            return
        if idle_ms > limit_ms:
            from ray_on_spark.on_spark import api

            if api.shutdown_if_active(cluster):
                logger.warning("Databricks: no notebook command for %.1f minute(s) (limit %g, %s): the Ray "
                               "cluster %s was shut down", idle_ms / 60_000, minutes, AUTOSHUTDOWN_ENV,
                               cluster.cluster_id)
            return
        cluster.wait_shutdown(AUTOSHUTDOWN_POLL_S)
