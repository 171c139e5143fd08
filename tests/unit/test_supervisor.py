"""Tests of the node supervisor with real processes (a tiny Python command stands in for
``ray start``, with and without ``--block``).  No Spark, no Ray.

Every process a test starts (directly or through the supervisor) is recorded with its
create time and killed at teardown if it is still there, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Tuple

import psutil
import pytest

from ray_on_spark.runtime.supervisor import (
    EXIT_HEAD_LOST,
    EXIT_NODE_DIED,
    EXIT_START_FAILED,
    EXIT_TERMINATED,
)

SUPERVISOR = [sys.executable, "-m", "ray_on_spark.runtime.supervisor"]
GONE_TIMEOUT = 5.0

# The stand-in for `ray start --block`: starts a grandchild, reports the pids and its own
# argv (one JSON line in the log), prints the readiness marker, then blocks.
NODE_CODE = r"""
import json, os, subprocess, sys, time
gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(json.dumps({"child": os.getpid(), "grandchild": gc.pid, "argv": sys.argv[1:]}), flush=True)
print("Ray runtime started.", flush=True)
time.sleep(600)
"""

# Like NODE_CODE, but the grandchild ignores SIGTERM.
STUBBORN_NODE_CODE = r"""
import json, os, subprocess, sys, time
gc = subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE, text=True)
gc.stdout.readline()  # the grandchild ignores SIGTERM from here on
print(json.dumps({"child": os.getpid(), "grandchild": gc.pid, "argv": sys.argv[1:]}), flush=True)
print("Ray runtime started.", flush=True)
time.sleep(600)
"""

# Like NODE_CODE, but the grandchild is orphaned at once (its parent exits), the way
# daemonising Ray processes are; the supervisor, a child subreaper, must adopt it.
ORPHANING_NODE_CODE = r"""
import json, os, subprocess, sys, time
mid = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print(p.pid, flush=True)"],
    stdout=subprocess.PIPE, text=True)
orphan = int(mid.stdout.readline())
mid.wait()
print(json.dumps({"child": os.getpid(), "grandchild": orphan, "argv": sys.argv[1:]}), flush=True)
print("Ray runtime started.", flush=True)
time.sleep(600)
"""

# `ray start` without --block: starts its "raylet" (argv[1], a copy of sleep named raylet), prints
# the marker and exits 0, leaving the node to the supervisor (the raylet's new parent, a subreaper).
DETACHING_NODE_CODE = r"""
import json, os, subprocess, sys
raylet = subprocess.Popen([sys.argv[1], "600"])
print(json.dumps({"child": os.getpid(), "grandchild": raylet.pid, "argv": sys.argv[1:]}), flush=True)
print("Ray runtime started.", flush=True)
sys.exit(0)
"""

FAIL_EARLY_CODE = r"""
import sys
print("starting the node")
print("Error: something is wrong with unique-failure-text-42", file=sys.stderr)
sys.exit(2)
"""

# Becomes ready, then exits with code 1, leaving its grandchild behind (as a dying
# `ray start` would leave its raylet).
DIE_AFTER_READY_CODE = r"""
import json, os, subprocess, sys, time
gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(json.dumps({"child": os.getpid(), "grandchild": gc.pid, "argv": sys.argv[1:]}), flush=True)
print("Ray runtime started.", flush=True)
time.sleep(0.5)
print("raylet died: unique-death-text-17", flush=True)
sys.exit(1)
"""

NEVER_READY_CODE = r"""
import subprocess, sys, time, json, os
gc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(json.dumps({"child": os.getpid(), "grandchild": gc.pid, "argv": sys.argv[1:]}), flush=True)
print("still starting...", flush=True)
time.sleep(600)
"""

# Starts the supervisor (its argv, with @PARENT@ replaced by this process's pid), says
# which pid it got, and sleeps: the test then SIGKILLs this process.
INTERMEDIATE_CODE = r"""
import os, subprocess, sys, time
cmd = [a.replace("@PARENT@", str(os.getpid())) for a in sys.argv[1:]]
p = subprocess.Popen(cmd)
print("SUPERVISOR", p.pid, flush=True)
time.sleep(600)
"""

Record = Tuple[int, float]


def _record(pid: int) -> Optional[Record]:
    try:
        return (pid, psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _is_gone(rec: Record) -> bool:
    pid, ctime = rec
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - ctime) > 0.01:
            return True  # pid reused
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(recs: List[Record], timeout: float = GONE_TIMEOUT) -> List[Record]:
    deadline = time.monotonic() + timeout
    while True:
        left = [r for r in recs if not _is_gone(r)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class _Pump:
    """A started process whose stdout lines are read by a thread."""

    def __init__(self, cmd: List[str]):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.seen: List[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = 10.0) -> Optional[str]:
        """The next stdout line; None at EOF."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; so far: {self.seen}")
        if line is not None:
            self.seen.append(line)
        return line

    def rest(self, timeout: float = 10.0) -> str:
        """All remaining output until EOF."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.05, deadline - time.monotonic()))
            if line is None:
                return "\n".join(out)
            out.append(line)


class _Processes:
    """Everything a test started; killed at teardown if still alive."""

    def __init__(self):
        self.records: List[Record] = []
        self.pumps: List[_Pump] = []

    def track(self, *pids: int) -> List[Record]:
        recs = [r for r in (_record(p) for p in pids) if r is not None]
        self.records.extend(recs)
        return recs

    def start(self, cmd: List[str]) -> _Pump:
        pump = _Pump(cmd)
        self.pumps.append(pump)
        self.track(pump.proc.pid)
        return pump

    def cleanup(self) -> None:
        for rec in reversed(self.records):
            if not _is_gone(rec):
                try:
                    psutil.Process(rec[0]).kill()
                except psutil.Error:
                    pass
        for pump in self.pumps:
            if pump.proc.poll() is None:
                pump.proc.kill()
            try:
                pump.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            if pump.proc.stdout is not None:
                pump.proc.stdout.close()


@pytest.fixture
def processes():
    ps = _Processes()
    try:
        yield ps
    finally:
        ps.cleanup()


def _supervisor_cmd(log, *options: str, code: str = NODE_CODE, args: Tuple[str, ...] = ()) -> List[str]:
    return [*SUPERVISOR, "--log", str(log), "--start-timeout", "10", *options, "--", sys.executable, "-c", code, *args]


def _node_info(log) -> dict:
    """The JSON line the stand-in node wrote to the log."""
    with open(log) as f:
        for line in f:
            if line.startswith("{"):
                return json.loads(line)
    raise AssertionError(f"no node info in the log: {open(log).read()!r}")


def _start_ready(processes: _Processes, cmd: List[str]) -> Tuple[_Pump, List[Record]]:
    """Start a supervisor, wait for READY, return it and the records of its tree."""
    sup = processes.start(cmd)
    line = sup.next_line()
    assert line == "READY", (line, sup.seen)
    log = cmd[cmd.index("--log") + 1]
    info = _node_info(log)
    tree = [processes.records[-1]] + processes.track(info["child"], info["grandchild"])
    assert len(tree) == 3, "child or grandchild already gone at READY"
    return sup, tree


class _Listener:
    """A listening socket that accepts (and drops) connections until closed."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except socket.timeout:
                pass
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    lst = _Listener()
    try:
        yield lst
    finally:
        lst.close()


# --------------------------------------------------------------------------- tests


def test_supervisor_says_ready_once_the_command_prints_the_marker(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log"))
    assert sup.proc.poll() is None
    assert all(not _is_gone(r) for r in tree)
    # The child really is the supervisor's child and the grandchild the child's.
    sup_pid, child_pid, gc_pid = (r[0] for r in tree)
    assert psutil.Process(child_pid).ppid() == sup_pid
    assert psutil.Process(gc_pid).ppid() == child_pid


def test_sigterm_ends_the_supervisor_its_child_and_grandchild(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log"))
    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    rc = sup.proc.wait(GONE_TIMEOUT)
    assert rc == EXIT_TERMINATED
    assert _wait_gone(tree) == []
    assert time.monotonic() - t0 < GONE_TIMEOUT
    assert "FAILED" not in sup.rest()  # a requested stop is not a failure


def test_sigint_stops_the_tree_like_sigterm(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log"))
    sup.proc.send_signal(signal.SIGINT)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_TERMINATED
    assert _wait_gone(tree) == []


def test_sigterm_removes_the_cleanup_dir(processes, tmp_path):
    node_dir = tmp_path / "node-temp"
    (node_dir / "session" / "logs").mkdir(parents=True)
    (node_dir / "session" / "logs" / "raylet.out").write_text("x" * 1000)
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log", "--cleanup-dir", str(node_dir)))
    assert node_dir.exists()  # not removed while the node runs
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_TERMINATED
    assert not node_dir.exists()
    assert _wait_gone(tree) == []


def test_log_inside_the_cleanup_dir_is_fine(processes, tmp_path):
    node_dir = tmp_path / "node-temp"
    node_dir.mkdir()
    sup, tree = _start_ready(processes, _supervisor_cmd(node_dir / "ray-start.log", "--cleanup-dir", str(node_dir)))
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_TERMINATED
    assert not node_dir.exists()


def test_command_failing_before_ready_reports_failed_with_its_output_and_exit_code_6(processes, tmp_path):
    node_dir = tmp_path / "node-temp"
    node_dir.mkdir()
    sup = processes.start(_supervisor_cmd(tmp_path / "log", "--cleanup-dir", str(node_dir), code=FAIL_EARLY_CODE))
    rc = sup.proc.wait(GONE_TIMEOUT)
    out = sup.rest()
    assert rc == EXIT_START_FAILED
    assert "READY" not in out.splitlines()
    first, _, tail = out.partition("\n")
    assert first.startswith("FAILED")
    assert "code 2" in first
    assert "unique-failure-text-42" in tail  # stderr of the command, too
    assert "starting the node" in tail
    assert not node_dir.exists()


def test_command_never_ready_fails_after_start_timeout_and_is_torn_down(processes, tmp_path):
    log = tmp_path / "log"
    cmd = _supervisor_cmd(log, code=NEVER_READY_CODE)
    cmd[cmd.index("--start-timeout") + 1] = "1"
    t0 = time.monotonic()
    sup = processes.start(cmd)
    rc = sup.proc.wait(GONE_TIMEOUT + 1)
    assert rc == EXIT_START_FAILED
    assert 0.9 < time.monotonic() - t0 < GONE_TIMEOUT + 1
    out = sup.rest()
    assert out.startswith("FAILED ray start not up after 1s")
    assert "still starting..." in out
    info = _node_info(log)
    tree = processes.track(info["child"], info["grandchild"])  # may already be gone
    assert _wait_gone(tree) == []
    for pid in (info["child"], info["grandchild"]):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_command_dying_after_ready_exits_5_with_its_output_and_kills_what_it_left(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log", code=DIE_AFTER_READY_CODE))
    rc = sup.proc.wait(GONE_TIMEOUT)
    assert rc == EXIT_NODE_DIED
    out = sup.rest()
    assert out.startswith("FAILED ray start exited with code 1")
    assert "unique-death-text-17" in out
    assert _wait_gone(tree) == []  # the left-behind grandchild too


def test_losing_the_watched_port_tears_the_node_down_with_exit_code_3(processes, tmp_path, listener):
    sup, tree = _start_ready(
        processes,
        _supervisor_cmd(tmp_path / "log", "--watch-host", "127.0.0.1", "--watch-port", str(listener.port)),
    )
    time.sleep(1.0)  # while the "head" answers, the node keeps running
    assert sup.proc.poll() is None
    assert all(not _is_gone(r) for r in tree)
    t0 = time.monotonic()
    listener.close()
    rc = sup.proc.wait(GONE_TIMEOUT)
    assert rc == EXIT_HEAD_LOST
    assert time.monotonic() - t0 < GONE_TIMEOUT
    assert _wait_gone(tree) == []
    assert sup.rest().startswith("FAILED Ray head gone (its host refuses the connection)")


@pytest.mark.parametrize("pass_parent_pid", [True, False], ids=["parent-pid", "implicit-parent"])
def test_parent_death_tears_the_supervisor_and_its_tree_down(processes, tmp_path, pass_parent_pid):
    options = ("--parent-pid", "@PARENT@") if pass_parent_pid else ()
    sup_cmd = _supervisor_cmd(tmp_path / "log", *options)
    middle = processes.start([sys.executable, "-c", INTERMEDIATE_CODE, *sup_cmd])
    first = middle.next_line()
    assert first is not None and first.startswith("SUPERVISOR "), first
    sup_pid = int(first.split()[1])
    processes.track(sup_pid)
    assert middle.next_line() == "READY", middle.seen
    info = _node_info(tmp_path / "log")
    tree = [r for r in (_record(p) for p in (sup_pid, info["child"], info["grandchild"])) if r]
    processes.track(info["child"], info["grandchild"])
    assert len(tree) == 3
    assert psutil.Process(sup_pid).ppid() == middle.proc.pid

    t0 = time.monotonic()
    middle.proc.kill()
    middle.proc.wait(5)
    assert _wait_gone(tree) == [], "supervisor tree survived its parent"
    assert time.monotonic() - t0 < GONE_TIMEOUT
    # The supervisor still shares the pipe; it said why it stopped before exiting.
    assert middle.rest().startswith("FAILED parent process died")


def test_supervisor_pid_placeholders_are_filled_into_the_command(processes, tmp_path):
    log = tmp_path / "log"
    args = ("{supervisor_pid}", "--labels=pid={supervisor_pid},ctime={supervisor_ctime}", "plain")
    sup, tree = _start_ready(processes, _supervisor_cmd(log, args=args))
    argv = _node_info(log)["argv"]
    ctime_ms = int(psutil.Process(sup.proc.pid).create_time() * 1000)
    assert argv[0] == str(sup.proc.pid)
    assert argv[2] == "plain"
    prefix = f"--labels=pid={sup.proc.pid},ctime="
    assert argv[1].startswith(prefix), argv
    assert abs(int(argv[1][len(prefix):]) - ctime_ms) <= 1
    assert not any("{" in a for a in argv)


def test_grandchild_ignoring_sigterm_is_killed_after_the_grace_period(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log", "--grace", "0.5", code=STUBBORN_NODE_CODE))
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_TERMINATED
    assert _wait_gone(tree) == []


def test_a_node_whose_head_is_gone_is_killed_without_waiting_out_the_grace_period(processes, tmp_path, listener):
    # A raylet whose GCS is gone sits out SIGTERM's grace saying goodbye to it: nothing to drain.
    sup, tree = _start_ready(processes, _supervisor_cmd(
        tmp_path / "log", "--grace", "8", "--watch-host", "127.0.0.1", "--watch-port", str(listener.port),
        code=STUBBORN_NODE_CODE))
    time.sleep(0.5)  # the head has answered
    t0 = time.monotonic()
    listener.close()
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_HEAD_LOST
    assert time.monotonic() - t0 < 4.0  # not the 8 s grace: the stubborn grandchild was SIGKILLed at once
    assert _wait_gone(tree) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux-only")
def test_orphaned_descendants_are_adopted_and_torn_down(processes, tmp_path):
    sup, tree = _start_ready(processes, _supervisor_cmd(tmp_path / "log", code=ORPHANING_NODE_CODE))
    orphan_pid = tree[2][0]
    assert psutil.Process(orphan_pid).ppid() == sup.proc.pid  # adopted by the subreaper
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_TERMINATED
    assert _wait_gone(tree) == []


def test_a_command_that_exits_once_up_leaves_the_node_to_the_supervisor_until_its_raylet_dies(processes, tmp_path):
    raylet = tmp_path / "raylet"
    shutil.copy("/bin/sleep", raylet)
    sup = processes.start(_supervisor_cmd(tmp_path / "log", code=DETACHING_NODE_CODE, args=(str(raylet),)))
    assert sup.next_line() == "READY", sup.seen
    pid = _node_info(tmp_path / "log")["grandchild"]
    processes.track(pid)
    time.sleep(1.0)
    assert sup.proc.poll() is None  # its command exited 0, and it goes on supervising the node
    assert psutil.Process(pid).ppid() == sup.proc.pid  # adopted by the subreaper
    os.kill(pid, signal.SIGKILL)
    assert sup.proc.wait(GONE_TIMEOUT) == EXIT_NODE_DIED
    assert "the node's raylet died" in sup.rest()


def test_missing_double_dash_is_a_usage_error():
    proc = subprocess.run([*SUPERVISOR, "--log", "/dev/null"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "usage" in proc.stderr
