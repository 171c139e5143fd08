"""``benchmarks/soak.py`` runs: two minutes of its mix on a real standalone cluster.

This checks only that the soak runs end to end and cleans up; its figures (and whether anything
grows over 30 minutes) are read from a long run by hand and quoted in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.any_spark  # a benchmark's plumbing; the paths it drives are tested on both lines

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_soak_benchmark_runs_two_minutes_and_leaves_nothing(no_ray_left):
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "soak.py"), "--minutes", "2"],
                         capture_output=True, text=True, timeout=420, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert [m["minute"] for m in result["minutes"]] == [1, 2]
    assert result["all_spark_ok"] and result["ray_processes_left"] == 0
    for minute in result["minutes"]:
        assert minute["tasks"] > 0 and minute["actor_calls"] > 0 and minute["objects_crossed"] > 0
