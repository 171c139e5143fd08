"""Start-up progress: one log line as each stage of ``setup_ray_cluster`` completes, visible in a notebook.

A cluster takes seconds to tens of seconds to start; a silent cell for that long looks
hung. Each stage (head up, job submitted, node k of N joined, ready) is logged at INFO
with the seconds since setup began, and the last line says how to connect. In a Jupyter
or Databricks notebook, where Python's logging shows nothing below WARNING unless
configured, :func:`show_in_notebook` gives the package's logger a handler to the cell's
output -- only when nobody configured one, so an application's own logging is left alone.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Optional

logger = logging.getLogger(__name__)
PACKAGE_LOGGER = "ray_on_spark"


class StartProgress:
    """The stages of one cluster's start, logged once each with seconds since the start."""

    def __init__(self, nodes_expected: int):
        self.t0 = time.monotonic()
        self.nodes_expected = nodes_expected
        self.cluster_id: Optional[str] = None
        self._joined = 0
        self._head_logged = False

    def step(self, text: str, *args: Any) -> None:
        logger.info("Ray cluster %s: " + text + " (%.1fs)", self.cluster_id, *args, time.monotonic() - self.t0)

    def head_up(self, up: bool, address: Optional[str]) -> None:
        """Log the head node registering, once."""
        if up and not self._head_logged:
            self._head_logged = True
            self.step("head node up at %s", address)

    def nodes_joined(self, count: int) -> None:
        """Log each worker node joining, once (``count`` only grows in the log, even if the GCS flickers)."""
        while self._joined < min(count, self.nodes_expected):
            self._joined += 1
            self.step("worker node %d of %d joined", self._joined, self.nodes_expected)

    def ready(self, address: Optional[str], dashboard_url: Optional[str], autoscale_max: Optional[int]) -> None:
        scaling = f", autoscaling up to {autoscale_max}" if autoscale_max else ""
        self.step("ready with %d worker node(s)%s. Connect with ray.init() in this process (RAY_ADDRESS=%s is set) "
                  "or ray.init(address=%r) elsewhere with the cluster's token; dashboard %s",
                  self.nodes_expected, scaling, address, address, dashboard_url or "off")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (an IPython shell with a kernel, Databricks' included)."""
    shell_module = sys.modules.get("IPython")
    if shell_module is None:
        return False
    try:
        shell = shell_module.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def show_in_notebook() -> None:
    """In a notebook with no logging configured, send the package's INFO lines to the cell's output."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if not in_notebook() or package.hasHandlers():
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s ray_on_spark: %(message)s", "%H:%M:%S"))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
