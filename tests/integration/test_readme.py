"""Every Python example in the README is either run here as written or names the test that does what it shows.

A block is marked by the comment line right above it: ``<!-- example: runnable -->`` or
``<!-- example: tested by tests/<file>.py::<test name> -->``. An unmarked block, a marker naming a test
that does not exist, or a runnable block that fails, fails here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from typing import List, Tuple

import pytest

from helpers import ray_processes, spark_jvms, wait_no_new_ray_processes

pytestmark = pytest.mark.any_spark  # the README's examples as written; the API under them is tested on both

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = re.compile(r"<!-- example: (runnable|tested by (\S+)::(\w+)) -->")


def _python_blocks() -> List[Tuple[int, str, str]]:
    """(line, marker line, code) of every ```python block."""
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == "```python":
            end = lines.index("```", i + 1)
            blocks.append((i + 1, lines[i - 1] if i else "", "\n".join(lines[i + 1:end])))
    return blocks


BLOCKS = _python_blocks()


def test_every_python_example_is_marked_and_names_a_real_test():
    assert len(BLOCKS) >= 5
    for line, marker, _ in BLOCKS:
        m = MARKER.fullmatch(marker.strip())
        assert m, f"README.md:{line}: a python example without an '<!-- example: ... -->' line above it"
        if m.group(2):
            path = os.path.join(ROOT, m.group(2))
            tree = ast.parse(open(path).read())
            names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert m.group(3) in names, f"README.md:{line}: {m.group(2)} has no {m.group(3)}"


@pytest.mark.parametrize("line, code", [(line, code) for line, marker, code in BLOCKS if "runnable" in marker],
                         ids=lambda v: f"README.md:{v}" if isinstance(v, int) else "")
def test_runnable_example_runs_as_written_and_leaves_nothing(line, code, tmp_path):
    before, jvms = ray_processes(), spark_jvms()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYSPARK_PYTHON"] = sys.executable
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"README.md:{line} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert not wait_no_new_ray_processes(before)
    assert spark_jvms() <= jvms
