"""The multi-host rig itself: each host is isolated as a real one would be, hosts reach each other
only over the rig's switch, faults (a cut link, a lost host) behave like their real counterparts,
and nothing of a rig is left behind -- even when its owner is SIGKILLed.

Why these first: every later multi-host test trusts the rig; a leaky or half-isolated rig would
make a Ray/Spark test pass or fail for the wrong reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import psutil
import pytest

from .rig import (
    HostGoneError,
    HostRig,
    is_running,
    process_start_time,
    processes_in_namespaces,
    read_line,
)

log = logging.getLogger(__name__)

REPO = str(Path(__file__).resolve().parents[2])
SMALL_SHM = 64 * 1024 * 1024

# A TCP echo server: prints its port, then answers each connection with who it is and who called.
SERVER = r"""
import socket, sys
srv = socket.create_server((sys.argv[1], 0))
srv.settimeout(60)
print(srv.getsockname()[1], flush=True)
while True:
    conn, peer = srv.accept()
    with conn:
        conn.sendall(("%s saw %s: %s" % (socket.gethostname(), peer[0], conn.recv(64).decode())).encode())
"""

# A TCP client: retries until `total` seconds have passed; prints the answer, or why it failed (exit 1).
CLIENT = r"""
import socket, sys, time
ip, port, attempt, total = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + total
while True:
    try:
        with socket.create_connection((ip, port), timeout=attempt) as s:
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            print(s.recv(200).decode())
            sys.exit(0)
    except OSError as e:
        if time.monotonic() + attempt > deadline:
            print("failed: %s %s" % (type(e).__name__, e))
            sys.exit(1)
        time.sleep(0.1)
"""


# --------------------------------------------------------------------------- helpers


def root_state() -> Dict[str, Set[str]]:
    """What the rig must never add to the root namespaces: named netns, links, mounts."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=True).stdout
    with open("/proc/self/mounts") as f:
        mounts = set(f.read().splitlines())
    return {
        "netns": set(netns.split()),
        "links": {line.split(":")[1].strip() for line in links.splitlines()},
        "mounts": mounts,
    }


def added(before: Dict[str, Set[str]], after: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """What appeared in the root namespaces (only additions: other users of the machine may remove things)."""
    return {kind: after[kind] - before[kind] for kind in before if after[kind] - before[kind]}


def wait_until_gone(ns_ids: List[str], pids: List[Tuple[int, Optional[int]]], timeout: float) -> Tuple[list, list]:
    """Poll until no process is in ``ns_ids`` and none of ``pids`` (pid, start time) runs; what is left."""
    deadline = time.monotonic() + timeout
    while True:
        in_ns = processes_in_namespaces(ns_ids)
        running = [pid for pid, start in pids if is_running(pid, start)]
        if not (in_ns or running) or time.monotonic() > deadline:
            return in_ns, running
        time.sleep(0.05)


def start_orphans(host) -> Tuple[int, int]:
    """Two daemons in ``host``, as ``ray start`` leaves them: one that lives on and one that exits after
    a second (root-namespace PIDs)."""
    # Durations no other test process uses (the teardown test's sleepers run ``sleep 30``), so the
    # search below cannot mistake one of those for a daemon.
    host.run(["sh", "-c", "setsid sleep 29 </dev/null >/dev/null 2>&1 & setsid sleep 1.1 </dev/null >/dev/null 2>&1 &"],
             timeout=10, check=True)
    deadline = time.monotonic() + 10
    found: Dict[str, int] = {}
    while len(found) < 2 and time.monotonic() < deadline:  # sh returns before its children exec sleep
        for pid in host.pids():
            with contextlib.suppress(psutil.Error):
                cmd = psutil.Process(pid).cmdline()
                if cmd[:1] == ["sleep"] and cmd[1] in ("29", "1.1"):
                    found[cmd[1]] = pid
        time.sleep(0.02)
    assert set(found) == {"29", "1.1"}, f"the daemons did not start in {host.name}: {found}"
    return found["29"], found["1.1"]


def probe_all(rig: HostRig, env: Dict[str, str]) -> List[dict]:
    """Run the probe module in every host at once; what each saw."""
    names = [h.name for h in rig]
    procs = [h.popen([sys.executable, "-m", "tests.multihost.probe", *names], cwd=REPO, env=env,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for h in rig]
    seen = []
    for host, proc in zip(rig, procs):
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"probe in {host.name} failed: {err}"
        report = json.loads(out)
        report["processes"] = {int(pid): cmd for pid, cmd in report["processes"].items()}
        seen.append(report)
    return seen


def start_server(host) -> Tuple[subprocess.Popen, int]:
    server = host.popen([sys.executable, "-c", SERVER, host.ip], stdout=subprocess.PIPE)
    line = read_line(server.stdout, time.monotonic() + 20)
    assert line.strip().isdigit(), f"the server in {host.name} did not print its port: {line!r}"
    return server, int(line)


def call(host, target, port: int, attempt: float, total: float) -> Tuple[int, str]:
    done = host.run([sys.executable, "-c", CLIENT, target.ip, str(port), str(attempt), str(total)],
                    capture_output=True, text=True, timeout=total + attempt + 20)
    return done.returncode, done.stdout.strip() + done.stderr.strip()


# --------------------------------------------------------------------------- tests


def test_each_host_has_its_own_address_hostname_tmp_shm_and_process_table(rig):
    token = f"ros-mh-{secrets.token_hex(6)}"
    rig[0].run(["touch", f"/tmp/{token}"], timeout=10, check=True)
    nap = f"29.{secrets.randbelow(10**6):06d}"  # a process of host0 that no other host may see
    sleeper = rig[0].popen(["sleep", nap])
    try:
        sleeper_host_pid = sleeper.host_pid
        assert os.readlink(f"/proc/{sleeper.inner_pid()}/ns/pid") == rig[0].namespaces["pid"]
        seen = probe_all(rig, {**os.environ, "ROS_MH_PROBE_FILE": token, "ROS_MH_PROBE_ENV": "passed"})
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
        rig[0].run(["rm", "-f", f"/tmp/{token}"], timeout=10)  # the rig is shared: leave host0 as found

    assert not os.path.exists(f"/tmp/{token}"), "host0's /tmp leaked into the root's"
    for i, (host, saw) in enumerate(zip(rig, seen)):
        assert saw["hostname"] == host.hostname == f"host{i}"
        assert saw["addresses"] == sorted(["127.0.0.1", host.ip]) and host.ip == f"198.51.100.{10 + i}"
        assert saw["interfaces"] == ["eth0", "lo"]
        assert saw["resolved"] == {h.name: h.ip for h in rig}, "every host's /etc/hosts names every host"
        assert saw["route_out"] == "ENETUNREACH", "a host must have no way out of the rig"
        assert saw["shm_bytes"] == rig.shm_bytes
        assert saw["file_in_tmp"] is (i == 0), "a file written in host0's /tmp is only there"
        assert (saw["cwd"], saw["env"]) == (REPO, "passed")
        # Its own process table: its init (PID 1), the probe itself, and in host0 the sleeper -- no other host's.
        assert saw["processes"][saw["pid"]].endswith(f"-m tests.multihost.probe {' '.join(h.name for h in rig)}")
        assert saw["processes"][1].endswith(f"hostinit.py host {host.name} {rig.tmp_bytes} {rig.shm_bytes}")
        sleepers = [pid for pid, cmd in saw["processes"].items() if cmd == f"sleep {nap}"]
        assert sleepers == ([sleeper_host_pid] if i == 0 else [])
        assert len(saw["processes"]) == (3 if i == 0 else 2), saw["processes"]
    assert sleeper.returncode == -signal.SIGKILL, "kill() reaches the command inside, and nsenter reports it"


def test_hosts_reach_each_other_over_tcp_and_a_cut_link_stops_traffic_until_restored(rig):
    host0, host1, host2 = rig[0], rig[1], rig[2]
    server, port = start_server(host1)
    try:
        assert call(host0, host1, port, 2, 10) == (0, f"host1 saw {host0.ip}: ping")
        assert call(host2, host1, port, 2, 10) == (0, f"host1 saw {host2.ip}: ping")

        host1.link_down()
        try:
            rc, said = call(host0, host1, port, 1.5, 1.5)
            assert rc == 1 and "failed" in said, f"host0 reached host1 through a cut link: {said}"
            other, other_port = start_server(host2)  # the rest of the rig still talks
            try:
                assert call(host0, host2, other_port, 2, 10) == (0, f"host2 saw {host0.ip}: ping")
            finally:
                other.kill()
                other.wait(timeout=10)
                other.stdout.close()
        finally:
            host1.link_up()
        assert call(host0, host1, port, 2, 10) == (0, f"host1 saw {host0.ip}: ping")
    finally:
        server.kill()
        server.wait(timeout=10)
        server.stdout.close()


def test_signals_and_deadlines_reach_the_command_in_the_host_not_just_its_nsenter(rig):
    host = rig[1]
    trap = ("import os, signal, time\n"  # os.write: a print in a handler can interrupt print('up') mid-flush
            "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'terminated\\n'), os._exit(3)))\n"
            "print('up', flush=True)\n"
            "time.sleep(30)\n")
    proc = host.popen([sys.executable, "-I", "-S", "-c", trap], stdout=subprocess.PIPE)
    try:
        assert read_line(proc.stdout, time.monotonic() + 20) == b"up\n"
        proc.terminate()
        assert proc.wait(timeout=10) == 3, "SIGTERM went to nsenter, not to the command"
        assert proc.stdout.read() == b"terminated\n"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()

    with pytest.raises(subprocess.TimeoutExpired):
        host.run(["sleep", "30"], timeout=0.3)
    assert host.pids() == [host.init_pid], "a command past its deadline is killed inside the host"


def test_teardown_leaves_no_namespace_link_mount_or_process():
    before = root_state()
    rig = HostRig(2, shm_bytes=SMALL_SHM)
    try:
        ns_ids = rig.namespace_ids()
        holders = [(pid, process_start_time(pid)) for pid in rig.holder_pids()]
        sleepers = [h.popen(["sleep", "30"]) for h in rig]  # something for teardown to clean up in each host
        assert all(s.inner_pid() for s in sleepers)
        assert set(processes_in_namespaces(ns_ids)) >= {s.inner_pid() for s in sleepers}, "the leak check sees them"
        assert added(before, root_state()) == {}, "a running rig shows nothing in the root namespaces"
        daemon, orphan = start_orphans(rig[0])
        deadline = time.monotonic() + 10  # the shell's exit and the re-parenting are not one step
        while psutil.Process(daemon).ppid() != rig[0].init_pid and time.monotonic() < deadline:
            time.sleep(0.02)
        assert psutil.Process(daemon).ppid() == rig[0].init_pid, "a daemon is reparented to its host's init"
        assert wait_until_gone([], [(orphan, None)], timeout=10) == ([], []), "the host's init reaps orphans"
        deadline = time.monotonic() + 10  # the init reaps in its own time
        while orphan in psutil.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert orphan not in psutil.pids(), "not even a zombie is left"
        assert rig.switch_links() == ["lo", "br0", "sw0", "sw1"]

        rig[1].kill_all()  # host loss
        assert not rig[1].alive
        assert processes_in_namespaces(rig[1].namespaces.values()) == []
        assert sleepers[1].wait(timeout=10) == -signal.SIGKILL
        assert rig.switch_links() == ["lo", "br0", "sw0"], "its link went with its namespace"
        with pytest.raises(HostGoneError):
            rig[1].run(["true"], timeout=10)
        with pytest.raises(HostGoneError):
            rig[1].link_down()
        assert rig[0].run(["hostname"], capture_output=True, text=True, timeout=10).stdout == "host0\n"
    finally:
        rig.close()
    rig.close()  # idempotent

    assert sleepers[0].returncode == -signal.SIGKILL
    assert processes_in_namespaces(ns_ids) == []
    assert not psutil.pid_exists(daemon) or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE
    assert [pid for pid, start in holders if is_running(pid, start)] == []
    assert added(before, root_state()) == {}


def test_a_rig_whose_owner_is_sigkilled_leaves_nothing(tmp_path):
    before = root_state()
    with open(tmp_path / "owner.log", "wb") as owner_log:
        owner = subprocess.Popen([sys.executable, "-m", "tests.multihost.rig", "--hosts", "2", "--hold", "60",
                                  "--run-in-each-host", "sleep 60"], cwd=REPO, stdout=subprocess.PIPE, stderr=owner_log)
    try:
        line = read_line(owner.stdout, time.monotonic() + 30)
        assert line, f"the owner printed nothing: {(tmp_path / 'owner.log').read_text()}"
        report = json.loads(line)
        in_hosts = [pid for p in report["host_processes"] for pid in (p["nsenter_pid"], p["inner_pid"])]
        watched = [(pid, process_start_time(pid)) for pid in report["holder_pids"] + in_hosts]
        assert all(is_running(pid, start) for pid, start in watched)

        os.kill(owner.pid, signal.SIGKILL)
        assert owner.wait(timeout=10) == -signal.SIGKILL
        in_ns, running = wait_until_gone(report["namespace_ids"], watched, timeout=15)
        assert (in_ns, running) == ([], []), "the rig's processes outlived their SIGKILLed owner"
        assert added(before, root_state()) == {}
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
        owner.stdout.close()


def test_a_kernel_that_refuses_namespaces_makes_the_rig_fail_loudly_saying_why():
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop CAP_SYS_ADMIN for this test"
    done = subprocess.run([setpriv, "--bounding-set=-sys_admin", "--inh-caps=-sys_admin", sys.executable, "-c",
                           "from tests.multihost.rig import HostRig; HostRig(1)"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tests.multihost.rig.RigError: switch: could not set up its namespaces"), done.stderr
    assert "Operation not permitted" in last and "The kernel refused" in last and "CAP_SYS_ADMIN" in last
