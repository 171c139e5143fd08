"""The node supervisor: one small process per Ray node that owns the node's process tree.

Started by the driver (for the head) and by each barrier Spark task (for a worker
node) as ``python -m ray_on_spark.runtime.supervisor [options] -- ray start ...``. ``ray start``
without ``--block`` exits once the node is up; its processes are then the supervisor's
(adopted), and the raylet stands for the node: when it dies the node is torn down.

Why a separate process: Spark kills a cancelled task's Python worker with SIGKILL and
Ray's processes would survive it as orphans.  The supervisor

* makes itself a *child subreaper*, so every process Ray forks (raylet, agents,
  dashboard, workers) stays in its tree even when its parent dies;
* watches its own parent and, for worker nodes, the head's GCS port; when either goes
  away it tears the whole tree down (SIGTERM, then SIGKILL) and removes the node's
  temp dir;
* reports readiness on stdout: ``READY`` once ``ray start`` says the node runs, or
  ``FAILED`` followed by the tail of ``ray start``'s output.

It imports only the standard library, psutil and the runtime (:mod:`ray_on_spark.runtime`), so it
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import List, Optional

from ray_on_spark.runtime import procs
from ray_on_spark.runtime.ports import HeadVerdict, HeadWatch, port_state

READY_MARKERS = ("Ray runtime started", "block forever")
#: Silence from the head (connect timeouts, not refusals) this long is noted in the node's log.
HEAD_SILENCE_S = 10.0
#: Silence this long counts as a lost head. Why so long: silence is a lost *network* (a partition,
#: a saturated host), not a stopped head -- a stopped head's host refuses the connection at once.
#: The node rides a partition out: if Ray declared it dead meanwhile, its raylet exits once the
#: link returns and the Spark task starts it again. Why not longer: past Spark's executor timeout
#: (``spark.network.timeout``, 120 s by default) the driver has declared the executor lost and
#: healed the slot elsewhere, and this task's kill may have been lost in the partition -- a node
#: it started again would be one too many.
HEAD_UNREACHABLE_S = 90.0
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
EXIT_HEAD_LOST = 3
EXIT_PARENT_LOST = 4
EXIT_NODE_DIED = 5
EXIT_START_FAILED = 6
EXIT_TERMINATED = 0


def _make_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except Exception:  # non-Linux: orphans go to init, we still kill the tree we see
        pass


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the supervisor dies (even by SIGKILL)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def _kill_processes_using(directory: str) -> None:
    """SIGKILL this user's processes whose command line or working dir is inside ``directory``."""
    import psutil

    if not directory:
        return
    for p in psutil.process_iter(["pid", "cmdline", "cwd", "uids"]):
        try:
            if p.pid == os.getpid() or (p.info["uids"] and p.info["uids"].real != os.getuid()):
                continue
            text = " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or "")
            if directory in text:
                p.kill()
        except psutil.Error:
            continue


def _collect_logs(node_dir: str, own_log: str, dest: str) -> None:
    """Copy the node's Ray session logs (and the start log) to ``dest`` before its dir goes."""
    import glob

    try:
        os.makedirs(dest, exist_ok=True)
        for logs in glob.glob(os.path.join(node_dir, "**", "session_*", "logs"), recursive=True):
            if os.path.isdir(logs) and not os.path.islink(os.path.dirname(logs)):
                shutil.copytree(logs, dest, dirs_exist_ok=True, ignore_dangling_symlinks=True,
                                ignore=shutil.ignore_patterns("*.sock"))
        if os.path.exists(own_log):
            shutil.copy2(own_log, dest)
    except OSError as e:  # never let log collection stop a teardown
        print(f"collecting logs to {dest} failed: {e}", file=sys.stderr)


def _tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class Supervisor:
    def __init__(self, args: argparse.Namespace, cmd: List[str]):
        self.args = args
        self.cmd = cmd
        self.child: Optional[subprocess.Popen] = None
        self.stopping = False
        self.parent = args.parent_pid or os.getppid()

    def start_janitor(self) -> None:
        """Fork a janitor that cleans up if this supervisor is SIGKILLed.

        Ray SIGKILLs an actor's direct children when the actor exits, so a supervisor
        started by an actor gets no chance to tear down.  Its command dies with it
        (``PR_SET_PDEATHSIG``); the janitor, a grandchild Ray does not touch, then ends
        whatever still runs in ``--cleanup-dir`` and removes the directory.
        """
        me = procs.ProcessRecord.of(os.getpid())
        if os.fork() > 0:
            return
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let the supervisor's readers see EOF when it is gone
            os.dup2(devnull, fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        try:
            while me is not None and me.alive():
                time.sleep(0.2)
            _kill_processes_using(self.args.cleanup_dir)
            shutil.rmtree(self.args.cleanup_dir, ignore_errors=True)
            _remove_links(self.args.cleanup_link)
        finally:
            os._exit(0)

    def _note(self, line: str) -> None:
        """A line in the node's log (what ``collect_log_to_path`` and a failed start show)."""
        try:
            with open(self.args.log, "a") as f:
                f.write(f"[ray_on_spark supervisor {time.strftime('%H:%M:%S')}] {line}\n")
        except OSError:
            pass

    def _say(self, line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            pass

    def run(self) -> int:
        _make_subreaper()
        me = procs.ProcessRecord.of(os.getpid())
        # Let the node advertise who supervises it (driver-side shutdown checks use it).
        fill = {"{supervisor_pid}": str(os.getpid()), "{supervisor_ctime}": str(int(me.create_time * 1000)) if me else "0"}
        for key, value in fill.items():
            self.cmd = [arg.replace(key, value) for arg in self.cmd]
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        log = open(self.args.log, "ab", buffering=0)
        self.child = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      preexec_fn=_die_with_parent if self.args.janitor else None)
        markers = tuple(self.args.ready_marker or READY_MARKERS)
        what = self.args.what
        ready = False
        head: Optional[HeadWatch] = None  # made when the head first answers
        silence_noted = False
        raylets: List[procs.ProcessRecord] = []
        deadline = time.monotonic() + self.args.start_timeout
        code = EXIT_TERMINATED
        reason = "terminated"
        detached = False  # the command exited once up, leaving the node to us (``ray start`` without --block)
        while not self.stopping:
            rc = None if detached else self.child.poll()
            if rc is not None:
                if rc == 0 and not ready and any(m in _tail(self.args.log, 8000) for m in markers):
                    ready = True
                    raylets = self._raylets()
                    self._say("READY")
                if rc == 0 and ready and raylets and any(r.alive() for r in raylets):
                    # Its processes are ours now (we are their subreaper); the raylet stands for the node.
                    detached = True
                    continue
                if ready:
                    code, reason = EXIT_NODE_DIED, f"{what} exited with code {rc}"
                else:
                    code, reason = EXIT_START_FAILED, f"{what} exited with code {rc} before it was up"
                break
            if os.getppid() != self.parent:
                code, reason = EXIT_PARENT_LOST, "parent process died"
                break
            if not ready:
                text = _tail(self.args.log, 8000)
                if any(m in text for m in markers):
                    ready = True
                    raylets = self._raylets()
                    self._say("READY")
                elif time.monotonic() > deadline:
                    code, reason = EXIT_START_FAILED, f"{what} not up after {self.args.start_timeout:.0f}s"
                    break
            elif raylets and not any(r.alive() for r in raylets):
                # The raylet is the node: when it is gone, tear the rest down at once so the
                # task can restart the node (``ray start --block`` would stop them one by one).
                code, reason = EXIT_NODE_DIED, "the node's raylet died"
                break
            if self.args.watch_host:
                # Once the head has answered, losing it means the cluster is gone -- also
                # while this node is still starting (shutdown right after setup). HeadWatch
                # tells a stopped head (refused) from a lost network (silence, ridden out).
                state = port_state(self.args.watch_host, self.args.watch_port)
                now = time.monotonic()
                if head is None and state == "open":
                    head = HeadWatch(HEAD_UNREACHABLE_S, now)
                if head is not None:
                    silent = head.silent_for(now)
                    verdict = head.observe(state, now)
                    if verdict is HeadVerdict.UP:
                        if silence_noted:
                            self._note(f"the Ray head answers again after {silent:.0f}s of silence")
                        silence_noted = False
                    elif verdict is HeadVerdict.GONE:
                        code, reason = EXIT_HEAD_LOST, "Ray head gone (its host refuses the connection)"
                        break
                    elif verdict is HeadVerdict.UNREACHABLE:
                        code, reason = EXIT_HEAD_LOST, f"Ray head unreachable for {silent:.0f}s ({state})"
                        break
                    elif silent > HEAD_SILENCE_S and not silence_noted:
                        silence_noted = True
                        self._note(f"the Ray head has not answered for {silent:.0f}s ({state}): the network "
                                   f"to it is down; riding it out for up to {HEAD_UNREACHABLE_S:.0f}s")
            time.sleep(self.args.poll)
        # Read the log before teardown: the node's temp dir (and the log) may be removed.
        tail = _tail(self.args.log) if code in (EXIT_START_FAILED, EXIT_NODE_DIED) else ""
        if code == EXIT_NODE_DIED:
            tail = f"{reason}\n{tail}"
        # Without its head a node has nobody to drain to: its raylet and agents sat out
        # SIGTERM's whole grace period (the raylet's goodbye to a GCS that is gone), which
        # doubled shutdown_ray_cluster() (2.4 s instead of 1.4 s) whenever the worker nodes
        # saw the head go only after the head's own grace period. Its tasks and actors end as
        # when Ray's own raylet dies: at once (0.2 s of grace for their SIGTERM handlers was
        # measured to cost 0.2-0.4 s of shutdown, one grace per teardown pass).
        self._teardown(grace=0.0 if code == EXIT_HEAD_LOST else self.args.grace)
        if code != EXIT_TERMINATED or not ready:
            self._say(f"FAILED {reason}")
            if tail:
                self._say(tail)
        return code

    def _raylets(self) -> List[procs.ProcessRecord]:
        import psutil

        out = []
        for r in procs.tree(os.getpid()):
            p = r.process()
            try:
                if p is not None and p.name() == "raylet":
                    out.append(r)
            except psutil.Error:
                pass
        return out

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _teardown(self, grace: float) -> None:
        """Stop the node's whole tree, fast: the cluster is going away, nothing to drain.

        ``ray start --block`` would answer SIGTERM by draining the node for up to 30 s
        and then stopping its children one after another, so it gets SIGKILL; its
        children (re-parented to us, the subreaper) all get SIGTERM at once, and
        SIGKILL after ``grace`` seconds.
        """
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        for _ in range(2):  # a second pass catches anything forked while we were stopping
            tree = [r for r in procs.tree(os.getpid()) if r.pid != os.getpid()]
            if tree:
                procs.terminate(tree, grace=grace, kill_wait=1.0)
        procs.reap_all(timeout=1.0)
        if self.args.collect_logs_to and self.args.cleanup_dir:
            _collect_logs(self.args.cleanup_dir, self.args.log, f"{self.args.collect_logs_to}-{os.getpid()}")
        if self.args.cleanup_dir:
            shutil.rmtree(self.args.cleanup_dir, ignore_errors=True)
        _remove_links(self.args.cleanup_link)


def _remove_links(links: List[str]) -> None:
    """Remove the short aliases (symlinks) made for the node's temp dir; never what they point to."""
    for link in links:
        if os.path.islink(link):
            try:
                os.unlink(link)
            except OSError:
                pass


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m ray_on_spark.runtime.supervisor [options] -- command ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="ray_on_spark.runtime.supervisor")
    p.add_argument("--log", required=True)
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--watch-host", default="")
    p.add_argument("--watch-port", type=int, default=0)
    p.add_argument("--cleanup-dir", default="")
    p.add_argument("--cleanup-link", action="append", default=[],
                   help="a symlink to remove at teardown (a short alias of the temp dir; repeatable)")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--grace", type=float, default=1.0)
    p.add_argument("--poll", type=float, default=0.1)
    p.add_argument("--ready-marker", action="append", default=[],
                   help="log text that means the command is up (repeatable; default: ray start's)")
    p.add_argument("--what", default="ray start", help="what the command is, for messages")
    p.add_argument("--collect-logs-to", default="", help="copy the node's logs to this path (+ -<pid>) at teardown")
    p.add_argument("--janitor", action="store_true",
                   help="the command dies with the supervisor, and a janitor cleans --cleanup-dir if it is SIGKILLed")
    args = p.parse_args(argv[:split])
    sup = Supervisor(args, argv[split + 1 :])
    if args.janitor and args.cleanup_dir:
        sup.start_janitor()
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
