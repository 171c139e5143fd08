"""An EMULATION of the Databricks runtime's ``dbruntime`` module, for tests only -- not Databricks.

It has the one entry point Ray's Databricks hook (and ours) calls:
``UserNamespaceInitializer.getOrCreate().get_spark_entry_point()``, whose
``getIdleTimeMillisSinceLastNotebookExecution()`` reports the idle time the test sets
(``ENTRY.idle_ms``) and whose ``registerBackgroundSparkJobGroup(group)`` records the
groups (``ENTRY.job_groups``). ``ENTRY.broken = True`` makes the idle time unreadable.
"""

from __future__ import annotations

from typing import List


class _SparkEntryPoint:
    def __init__(self) -> None:
        self.idle_ms = 0.0
        self.broken = False
        self.job_groups: List[str] = []

    def getIdleTimeMillisSinceLastNotebookExecution(self) -> float:  # noqa: N802  (the runtime's name)
        if self.broken:
            raise RuntimeError("emulated: entry point unavailable")
        return self.idle_ms

    def registerBackgroundSparkJobGroup(self, job_group_id: str) -> None:  # noqa: N802
        self.job_groups.append(job_group_id)


ENTRY = _SparkEntryPoint()


class UserNamespaceInitializer:
    _instance = None

    @classmethod
    def getOrCreate(cls) -> "UserNamespaceInitializer":  # noqa: N802
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def get_spark_entry_point(self) -> _SparkEntryPoint:
        return ENTRY
