"""``python -m ray_on_spark submit``: a Spark application whose executors live in Ray (``raydp-submit``'s job).

The command connects to Ray (``--ray-address``, else ``RAY_ADDRESS`` or a local Ray), starts a
Spark-on-Ray session with the executors asked for (:func:`ray_on_spark.init_spark`), and runs
the application in this process as its driver:

* a PySpark file (``app.py args...``) runs as ``__main__`` with ``sys.argv`` set; its
  ``SparkSession.builder...getOrCreate()`` returns the session, as under ``spark-submit``;
* a jar (``--class Main app.jar args...``) is handed to the executors (``addJar``) and its
  ``main(String[])`` runs in the driver's JVM, where ``SparkSession.builder().getOrCreate()``
  returns the same session.

Then the session stops and Ray disconnects, whatever the application did.  The exit status is
the application's: 0 when it returns, its ``sys.exit`` code, 1 when it raises (the traceback
goes to stderr).  Why not ``spark-submit --master ...``: executors here are launched by Ray
actors, which need the driver's address once it exists; running the driver in this process
is what makes that a plain function call (RayDP needs a custom master and scheduler backend).
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    """What to run and with which executors; checked by :func:`check_submission` before anything starts."""

    app: str
    app_args: List[str] = field(default_factory=list)
    main_class: Optional[str] = None
    name: Optional[str] = None
    num_executors: int = 1
    executor_cores: int = 1
    executor_memory: str = "1g"
    confs: Dict[str, str] = field(default_factory=dict)
    ray_address: Optional[str] = None

    @property
    def is_jar(self) -> bool:
        return self.app.endswith(".jar")

    @property
    def app_name(self) -> str:
        return self.name or os.path.splitext(os.path.basename(self.app))[0]


def check_submission(sub: Submission) -> Submission:
    """Refuse what cannot run, naming the argument and what works (ValueError); the app's path made absolute."""
    if not os.path.isfile(sub.app):
        raise ValueError(f"the application {sub.app!r} is not a file; give a PySpark .py file or a .jar with --class")
    if sub.is_jar and not sub.main_class:
        raise ValueError(f"{sub.app!r} is a jar: name its main class with --class, e.g. --class com.example.Main")
    if not sub.is_jar and sub.main_class:
        raise ValueError(f"--class {sub.main_class} is for a jar; {sub.app!r} runs as a PySpark file without it")
    if not sub.is_jar and not sub.app.endswith(".py"):
        raise ValueError(f"the application {sub.app!r} is neither a .py file nor a .jar")
    return Submission(os.path.abspath(sub.app), list(sub.app_args), sub.main_class, sub.name, sub.num_executors,
                      sub.executor_cores, sub.executor_memory, dict(sub.confs), sub.ray_address)


def run(sub: Submission) -> int:
    """Run the submission (module doc); its exit status."""
    import ray

    from ray_on_spark import spark_env
    from ray_on_spark.on_ray.api import init_spark, stop_spark

    sub = check_submission(sub)
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=sub.ray_address, log_to_driver=False)
    try:
        spark = init_spark(sub.app_name, sub.num_executors, sub.executor_cores, sub.executor_memory,
                           configs=sub.confs)
        try:
            if sub.is_jar:
                assert sub.main_class is not None
                spark_env.add_jar(spark.sparkContext, sub.app)
                return _run_java(spark, sub.app, sub.main_class, sub.app_args)
            return _run_python(sub.app, sub.app_args)
        finally:
            stop_spark()
    finally:
        if connected_here:
            ray.shutdown()


def _run_python(path: str, args: List[str]) -> int:
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # the application's failure: its traceback, and a failed status
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path


def _run_java(spark: object, jar: str, main_class: str, args: List[str]) -> int:
    from ray_on_spark import spark_env

    try:
        spark_env.run_java_main(spark.sparkContext, jar, main_class, args)  # type: ignore[attr-defined]
        return 0
    except Exception as e:  # the application's exception, raised in its main
        print(f"{main_class}.main failed: {e}", file=sys.stderr)
        return 1
