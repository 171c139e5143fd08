"""The command line on a real Spark standalone cluster: ``start`` serves a global cluster, ``status`` and ``check``
read it from other processes, SIGTERM stops it and leaves nothing -- as a shell user would run them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.any_spark  # the command line's plumbing (a start, status and check over a socket)

CLI = [sys.executable, "-m", "ray_on_spark"]


def _lines(proc: subprocess.Popen) -> "queue.Queue[str]":
    q: "queue.Queue[str]" = queue.Queue()

    def pump():
        for line in proc.stdout:
            q.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return q


def _wait_for(q: "queue.Queue[str]", text: str, timeout: float, seen: list) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} within {timeout:.0f}s; output so far: {seen}")


def test_start_serves_status_and_check_read_it_and_sigterm_leaves_nothing(standalone, tmp_path, no_ray_left):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path / "run"), PYSPARK_PYTHON=sys.executable)
    (tmp_path / "run").mkdir(mode=0o700)
    stderr = open(tmp_path / "start.err", "w")
    start = subprocess.Popen(
        CLI + ["start", "--master", standalone.master_url, "--max-worker-nodes", "2", "--num-cpus-worker-node", "1",
               "--num-cpus-head-node", "0", "--conf", "spark.driver.host=127.0.0.1",
               "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.executor.memory=1g",
               "--conf", "spark.ui.enabled=false", "--conf", f"spark.pyspark.python={sys.executable}"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
    )
    seen: list = []
    try:
        lines = _lines(start)
        _wait_for(lines, "SIGTERM stops it", 180, seen)
        printed = "\n".join(seen)
        assert "address" in printed and "client address  ray://" in printed and "dashboard       http://127.0.0.1:" in printed

        status = subprocess.run(CLI + ["status", "--json"], capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        kinds = sorted(n["kind"] for n in info["nodes"])
        assert kinds == ["head", "worker", "worker"], info
        assert sorted(n["spark_partition"] for n in info["nodes"] if n["kind"] == "worker") == ["0", "1"]
        assert info["spark_job_group"] == f"ray_on_spark-{info['cluster_id']}" and info["uptime_s"] > 0
        assert all(n["resources"]["CPU"]["total"] == 1 for n in info["nodes"] if n["kind"] == "worker")
        table = subprocess.run(CLI + ["status"], capture_output=True, text=True, env=env, timeout=120)
        assert table.returncode == 0 and "worker" in table.stdout and info["cluster_id"] in table.stdout

        check = subprocess.run(CLI + ["check", "--json"], capture_output=True, text=True, env=env, timeout=180)
        assert check.returncode == 0, (check.stdout, check.stderr)
        report = json.loads(check.stdout)
        workers = [n for n in report["nodes"] if not n["is_head"]]
        assert report["ok"] and len(workers) == 2 and all(n["tasks"] > 0 and n["actor"] for n in workers), report

        start.send_signal(signal.SIGTERM)
        assert start.wait(90) == 0, open(tmp_path / "start.err").read()[-3000:]
        _wait_for(lines, "Ray cluster stopped.", 5, seen)
        assert not (tmp_path / "run" / "ray_on_spark" / "global-cluster.json").exists()
        assert not (tmp_path / "run" / "ray_on_spark" / "global-cluster.token").exists()
    finally:
        if start.poll() is None:
            start.kill()
            start.wait()
        stderr.close()
