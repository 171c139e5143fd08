"""Starting a command under the node supervisor, and the handle its starter keeps.

Every long-running process the library starts -- a Ray head or worker node, a Spark
master or executor of Spark-on-Ray mode -- runs as
``python -m ray_on_spark.runtime.supervisor [options] -- command``; :func:`supervisor_command`
is the one place that writes that command line, and :class:`SupervisedProcess` reads the
supervisor's ``READY`` / ``FAILED`` report.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Sequence, Tuple

from ray_on_spark.runtime import procs, waiting

SUPERVISOR_MODULE = "ray_on_spark.runtime.supervisor"


def supervisor_command(
    command: Sequence[str],
    *,
    log: str,
    cleanup_dir: str,
    start_timeout: float,
    watch: Optional[Tuple[str, int]] = None,
    what: Optional[str] = None,
    ready_marker: Optional[str] = None,
    janitor: bool = False,
    collect_logs_to: Optional[str] = None,
    cleanup_links: Sequence[str] = (),
) -> List[str]:
    """``command`` wrapped in a supervisor that follows this process and removes ``cleanup_dir``.

    ``watch``: a (host, port) whose listener going away means the node must stop (a worker
    node watches its head's GCS). ``ready_marker``: the log text that means ``command`` is
    up (default: ``ray start``'s). ``janitor``: the command dies with the supervisor and a
    janitor cleans up if the supervisor is SIGKILLed (Ray kills an actor's children so).
    ``collect_logs_to``: copy the node's logs there (plus ``-<pid>``) at teardown.
    ``cleanup_links``: symlinks to remove at teardown (short aliases of ``cleanup_dir``'s contents).
    """
    argv = [
        sys.executable, "-m", SUPERVISOR_MODULE,
        "--log", log,
        "--parent-pid", str(os.getpid()),
        "--cleanup-dir", cleanup_dir,
        "--start-timeout", str(start_timeout),
    ]
    if watch is not None:
        argv += ["--watch-host", watch[0], "--watch-port", str(watch[1])]
    if what is not None:
        argv += ["--what", what]
    if ready_marker is not None:
        argv += ["--ready-marker", ready_marker]
    if janitor:
        argv.append("--janitor")
    if collect_logs_to:
        argv += ["--collect-logs-to", collect_logs_to]
    for link in cleanup_links:
        argv += ["--cleanup-link", link]
    return argv + ["--", *command]


class SupervisedProcess:
    """A started supervisor and its stdout lines, read by a thread."""

    def __init__(self, cmd: List[str], env: Dict[str, str], what: str = "Ray worker node", cwd: Optional[str] = None):
        self.what = what
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            # Own session: when the executor dies, pyspark's daemon SIGHUPs its process group;
            # the supervisor must not die with it before tearing its node down (it notices
            # its parent's death by itself). On the driver, a Ctrl-C in its terminal must not
            # kill the head behind the library's back either.
            start_new_session=True,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.pid = self.proc.pid
        self.record = procs.ProcessRecord.of(self.pid)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> Optional[str]:
        """None when READY, else the failure text (the supervisor's report, or a timeout)."""
        deadline = waiting.deadline_after(timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.05, waiting.remaining(deadline)))
            except queue.Empty:
                return f"{self.what} did not report ready within {timeout:.0f}s"
            if line is None:
                return "supervisor exited without output"
            if line == "READY":
                return None
            if line.startswith("FAILED"):
                return line + "\n" + self.rest()

    def rest(self, timeout: float = 5.0) -> str:
        """What the supervisor still writes until it exits (its failure report), for at most ``timeout`` s."""
        out = []
        deadline = waiting.deadline_after(timeout)
        while waiting.remaining(deadline) > 0:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line is None:
                break
            out.append(line)
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the supervisor (it tears its tree down), SIGKILL it after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
