"""The two-engine example and the notebooks run as a user runs them: a script in its own process, notebooks in
a real kernel. Each is a Spark application of its own, so this module holds no SparkSession."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from helpers import ray_processes, wait_no_new_ray_processes

pytestmark = pytest.mark.any_spark  # the examples; the quickstart notebook runs on both (test_separate_drivers.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_notebook(name: str) -> str:
    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_two_engines_example_runs_both_ways_and_beside_the_two_cluster_way(standalone):
    before = ray_processes()
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "two_engines_one_program.py"), "--mode", "both",
         "--rows", "20000", "--reps", "1", "--master", standalone.master_url],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, PYSPARK_PYTHON=sys.executable),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for mode in ("ray_on_spark", "spark_on_ray"):
        side = result[mode]
        assert side["rows_scored"] > 15000  # the ETL filter keeps most trips
        assert side["one_program"]["total_s"] > 0 and side["two_clusters"]["total_s"] > 0
    assert len(result["ray_on_spark"]["ray_nodes"]) >= 1  # the actor pool ran on the cluster's nodes
    assert "[ray-on-spark] Ray Data inference ran on Ray nodes" in r.stdout
    assert "vs two clusters through Parquet" in r.stdout and "last round, stage by stage" in r.stdout
    assert not wait_no_new_ray_processes(before)


def test_two_engines_notebook_runs_with_a_real_kernel(standalone, monkeypatch):
    before = ray_processes()
    monkeypatch.setenv("RAY_ON_SPARK_MASTER", standalone.master_url)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    out = _run_notebook("two_engines_one_program.ipynb")
    assert "trips scored: " in out and "on Ray nodes:" in out
    assert not wait_no_new_ray_processes(before)


def test_spark_on_ray_notebook_runs_with_a_real_kernel(monkeypatch):
    before = ray_processes()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    out = _run_notebook("spark_on_ray_quickstart.ipynb")
    assert "executors: 2" in out
    assert "rows in Ray: 100000 rows back in Spark: 100000" in out
    assert not wait_no_new_ray_processes(before)
