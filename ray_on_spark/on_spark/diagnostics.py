"""Why a Ray-on-Spark cluster did not start, in words a user can act on.

Pure text: what the barrier tasks reported, the failed Spark job's error without its JVM
frames, the end of the head's raylet log (it is gone with the temp dir after shutdown, so
it is read at once), and a fix when the cause is a known one.
"""

from __future__ import annotations

import glob
import json
import os
from typing import List, Optional

#: Text of a Python error in an executor that cannot import the library (from the Spark job's error).
_MISSING_MODULES = ("No module named 'ray_on_spark'", "No module named 'ray'")


def spark_job_failure(text: str) -> str:
    """The barrier job itself failed (Spark gave up on it): its task's Python traceback, and a fix if known."""
    return f"The Spark job holding the Ray worker nodes failed: {short_spark_error(text)}{executor_hint(text)}"


def worker_start_failure(results: List[str], temp_dir: Optional[str]) -> str:
    """The barrier tasks returned (they do not raise: Spark would retry the stage): each node's error."""
    errors = [json.loads(r).get("error") or json.loads(r).get("reason") for r in results]
    errors = [e for e in errors if e]
    return ("Ray worker nodes failed to start:\n" + ("\n".join(errors) or "(no error text)")
            + head_raylet_tail(temp_dir))


def head_raylet_tail(temp_dir: Optional[str], lines: int = 15) -> str:
    """The end of the head's raylet log: why workers found no head node."""
    if temp_dir is None:
        return ""
    logs = sorted(glob.glob(os.path.join(temp_dir, "head", "session_*", "logs", "raylet.out")))
    if not logs:
        return ""
    try:
        with open(logs[-1], errors="replace") as f:
            tail = f.readlines()[-lines:]
    except OSError:
        return ""
    return f"\nThe head's raylet log ({logs[-1]}) ends with:\n" + "".join(tail).rstrip()


def short_spark_error(text: str) -> str:
    """The Python traceback of the failed task, without the JVM stack frames around it."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("at ")]
    return "\n".join(lines[:60])


def executor_hint(text: str) -> str:
    """A fix for a cause recognised in the task's error text (it crosses the JVM as text only), or ""."""
    if any(m in text for m in _MISSING_MODULES):
        return (
            "\nFix: the executors' Python cannot import ray_on_spark/ray. Install them there, or point the "
            "executors at a Python that has them: set PYSPARK_PYTHON before creating the SparkSession "
            "(or spark.pyspark.python with spark-submit), and spark.executorEnv.PATH if `ray` must be on PATH."
        )
    return ""
