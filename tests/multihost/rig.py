"""N simulated hosts on this one machine, made of Linux namespaces, for multi-host tests.

Why: Ray and Spark behave differently across hosts than on one -- addresses, hostnames, /tmp and
/dev/shm, the process table Ray scans to find its raylet, losing a host or its network. Each host
of this rig has its own network stack, hostname, IPC, mount table (a private tmpfs on /tmp and a
size-limited one on /dev/shm, its own /proc, its own /etc/hosts naming every host) and PID
namespace, while the filesystem is shared, so the venv and the repository work unchanged inside::

    switch namespace (net):   br0 --- sw0      sw1      sw2   ...   (veth ends on the bridge)
                                       |        |        |
    hosts (net,uts,ipc,mnt,pid):      eth0     eth0     eth0
                                  198.51.100.10 .11     .12         (TEST-NET-2, no default route)

Safety: nothing is created in the root namespaces. Links are made inside the switch namespace
(the host's end is created straight into the host's namespace), so no link ever appears in the
root one, and with no uplink and no default route no packet can leave the rig's namespaces.

Lifetime: every namespace is held by a process, never by a name (no ``ip netns add``): each holder
is ``unshare ... --fork --pid --kill-child`` with ``hostinit.py`` as PID 1 of its PID namespace. The
unshare process gets PR_SET_PDEATHSIG=SIGKILL, so if the owning Python process dies, even by
SIGKILL, unshare dies, ``--kill-child`` SIGKILLs the init, the kernel kills every process of that
PID namespace, and the namespaces vanish with their last process.

Usage::

    with HostRig(3) as rig:
        rig[1].run([sys.executable, "-m", "some.module"], env={**os.environ, "X": "1"},
                   cwd="/work/main", timeout=60, check=True, capture_output=True, text=True)
        rig[2].link_down(); ...; rig[2].link_up()
        rig[0].kill_all()          # host loss

Run ``python -m tests.multihost.rig --hosts 2 --hold 30`` (as root, from the repository root) for a
rig to poke at by hand; it prints the hosts' PIDs and namespaces as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

log = logging.getLogger(__name__)

DEFAULT_SUBNET = "198.51.100.0/24"  # TEST-NET-2 (RFC 5737): for documentation, routed nowhere
FIRST_HOST_OFFSET = 10  # host i gets <subnet>.(10 + i)
DEFAULT_SHM_BYTES = 512 * 1024 * 1024  # a tmpfs limit, not a reservation: memory is used only as written
DEFAULT_TMP_BYTES = 2 * 1024 * 1024 * 1024
HOST_NAMESPACES = ("net", "uts", "ipc", "mnt", "pid")
SWITCH_BRIDGE = "br0"
HOST_INTERFACE = "eth0"
PR_SET_PDEATHSIG = 1
READY = b"ready\n"

Command = Union[str, Sequence[str]]

_LIBC = ctypes.CDLL(None, use_errno=True)

HOST_INIT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostinit.py")  # PID 1 of each holder


def _kept_under_tmp() -> List[str]:
    """The checkout (with its venv) and this Python's prefix, where they live under /tmp: a host's
    private /tmp would hide them, and every host must run the same code (a CI's clean clone may be
    in /tmp)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = {os.path.realpath(p) for p in (repo, sys.prefix)}
    return sorted(p for p in paths if p == "/tmp" or p.startswith("/tmp/"))


class RigError(RuntimeError):
    """The rig could not be built, driven or torn down; the message says what was refused and why."""


class HostGoneError(RigError):
    """The host was lost (``kill_all``) or its rig closed: nothing runs there any more."""


# --------------------------------------------------------------------------- /proc helpers


def _stat_fields(pid: int) -> Optional[List[str]]:
    """/proc/<pid>/stat after the command name: [0] state, [1] ppid, [19] start time; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].decode().split()


def _pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def children(pid: int) -> List[int]:
    """The live children of ``pid``. Why a scan: kernels without CONFIG_PROC_CHILDREN (like this
    sandbox's) have no /proc/<pid>/task/<pid>/children."""
    found = []
    for child in _pids():
        fields = _stat_fields(child)
        if fields and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(child)
    return found


def process_start_time(pid: int) -> Optional[int]:
    """Start time of ``pid`` in clock ticks since boot, to tell a process from a later one that reuses its PID."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, start_time: Optional[int] = None) -> bool:
    """True while ``pid`` is a live (non-zombie) process -- the same one, when ``start_time`` is given."""
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return start_time is None or int(fields[19]) == start_time


def namespace_ids(pid: int, kinds: Sequence[str] = HOST_NAMESPACES) -> Dict[str, str]:
    """The namespaces of ``pid`` by kind, e.g. {"net": "net:[4026532301]"}; an identity unique while it exists."""
    return {kind: os.readlink(f"/proc/{pid}/ns/{kind}") for kind in kinds}


def processes_in_namespaces(ns_ids: Iterable[str]) -> List[int]:
    """Every live process (root-namespace PID) that is in any of the namespaces ``ns_ids``.

    Why: this is the rig's leak check. It finds the holders (unshare itself is in the network
    namespace it made), their inits, every process in a host and the nsenter wrappers (which are in
    the host's network namespace). Zombies are skipped: they hold no namespace but the PID one.
    """
    wanted = set(ns_ids)
    found = []
    for pid in _pids():
        for kind in ("net", "pid", "mnt"):
            try:
                link = os.readlink(f"/proc/{pid}/ns/{kind}")
            except OSError:
                continue
            if link in wanted:
                fields = _stat_fields(pid)
                if fields and fields[0] != "Z":
                    found.append(pid)
                break
    return found


# --------------------------------------------------------------------------- subprocess helpers


def _tool(name: str) -> str:
    """Absolute path of a system tool, so that a caller's ``env`` without PATH cannot hide it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise RigError(f"{name} not found: the multi-host rig needs util-linux (unshare, nsenter) and iproute2 (ip)")
    return path


def _die_with_owner(owner_pid: int) -> Callable[[], None]:
    """A preexec_fn making the child SIGKILLed when its parent dies.

    Why: a holder outliving a SIGKILLed owner would keep its namespaces (and every process in them)
    forever. The death signal survives exec. It fires when the *thread* that started the child
    exits, so build the rig on a thread that outlives it (pytest's main thread does). The getppid
    check closes the race where the owner died before prctl ran.
    """

    def preexec() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != owner_pid:
            os._exit(1)

    return preexec


def read_line(stream: IO[bytes], deadline: float) -> bytes:
    """One line from a pipe (e.g. a READY or a port a process prints), or what came before EOF or the
    deadline: never blocks past it, unlike ``stream.readline()``."""
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                break
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                break
            data += chunk
    return data


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# --------------------------------------------------------------------------- holders


class _Holder:
    """One process holding a set of new namespaces: ``unshare ... --fork --pid --kill-child`` and,
    as PID 1 of the new PID namespace, ``hostinit.py``."""

    def __init__(self, label: str, unshare: str, kinds: Sequence[str], init_args: Sequence[str],
                 etc_hosts: str = "") -> None:
        self.label = label
        self.kinds = tuple(kinds)  # the namespaces made for it, always including mnt and pid
        flags = [f"--{kind}" for kind in kinds if kind not in ("mnt", "pid")]  # --net, --uts, --ipc
        self.unshare_argv = [unshare, *flags, "--mount", "--pid", "--fork", "--kill-child=SIGKILL", "--mount-proc",
                             "--propagation", "private"]
        argv = [*self.unshare_argv, "--", sys.executable, "-I", "-S", HOST_INIT, *init_args]
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "ROS_MH_ETC_HOSTS": etc_hosts,
               "ROS_MH_KEEP": os.pathsep.join(_kept_under_tmp())}
        log.debug("%s: starting %s", label, " ".join(self.unshare_argv))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, preexec_fn=_die_with_owner(os.getpid()), close_fds=True)
        self.init_pid: Optional[int] = None
        self.namespaces: Dict[str, str] = {}

    def wait_ready(self, deadline: float) -> None:
        """Wait for the init's READY, then learn its PID and namespaces; raise what the kernel refused."""
        line = read_line(self.proc.stdout, deadline)
        if line != READY:
            raise RigError(self._failure(line, deadline))
        self.proc.stdout.close()
        self.proc.stderr.close()
        kids = children(self.proc.pid)
        if len(kids) != 1:
            raise RigError(f"{self.label}: expected unshare (pid {self.proc.pid}) to have one child, its init; found {kids}")
        self.init_pid = kids[0]
        self.namespaces = namespace_ids(self.init_pid, self.kinds)

    def _failure(self, line: bytes, deadline: float) -> str:
        timed_out = time.monotonic() >= deadline  # else EOF: unshare or the init exited, saying why on stderr
        if timed_out:
            self.proc.kill()
        try:
            _, err = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = b""
        text = (line + (err or b"")).decode(errors="replace").strip() or "(no message)"
        what = " ".join(self.unshare_argv)
        if timed_out:
            return f"{self.label}: `{what}` did not get ready in time; it said: {text}"
        why = ""
        if "Operation not permitted" in text or "Permission denied" in text:
            why = (f" The kernel refused: creating network, mount and PID namespaces and mounting tmpfs needs "
                   f"CAP_SYS_ADMIN in the initial user namespace (this process has euid {os.geteuid()}). Run the "
                   "multi-host tests as root on a VM or in a privileged container, with no seccomp/AppArmor "
                   "profile blocking unshare(2), setns(2) and mount(2).")
        return f"{self.label}: could not set up its namespaces: `{what}` exited {self.proc.returncode}: {text}.{why}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, deadline: float) -> None:
        """SIGKILL the init -- the kernel then kills every process of its PID namespace -- and reap unshare.

        Why the init and not unshare: unshare is our child and reaps the init, so once unshare has
        exited, the whole PID namespace is provably gone (an exiting namespace init waits for all
        its processes). The ppid check keeps a recycled PID from being killed by mistake.
        """
        if self.proc.poll() is None:
            fields = _stat_fields(self.init_pid) if self.init_pid else None
            if fields and int(fields[1]) == self.proc.pid:
                os.kill(self.init_pid, signal.SIGKILL)
            else:
                self.proc.kill()  # --kill-child passes the SIGKILL on to the init
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()
        try:
            self.proc.wait(timeout=_remaining(deadline))
        except subprocess.TimeoutExpired as e:
            raise RigError(f"{self.label}: unshare (pid {self.proc.pid}) did not exit after its init was SIGKILLed") from e


# --------------------------------------------------------------------------- processes in hosts


PRIVATE_DIRS = ("/tmp", "/dev/shm")  # each host has its own; everything else is the shared filesystem


def _default_cwd() -> str:
    """The caller's working directory if a host sees the same one, else /."""
    cwd = os.getcwd()
    private = any(cwd == d or cwd.startswith(d + "/") for d in PRIVATE_DIRS)
    return "/" if private else cwd


class HostProcess(subprocess.Popen):
    """A process started in a host by ``nsenter``; a ``subprocess.Popen`` otherwise.

    Why the subclass: to enter a PID namespace nsenter forks -- the command runs as its child, in
    the host's PID namespace -- and nsenter does not pass signals on. ``pid`` is nsenter's (root
    namespace); ``send_signal``/``terminate``/``kill`` go to the command itself, and nsenter then
    exits with the command's status (``returncode`` is -15 after ``terminate``, as usual).
    """

    _inner: Optional[int] = None

    def inner_pid(self, timeout: float = 5.0) -> Optional[int]:
        """The command's PID in the root namespace (nsenter's child); None once it has exited."""
        deadline = time.monotonic() + timeout
        while self._inner is None and self.poll() is None:
            kids = children(self.pid)
            if kids:
                self._inner = kids[0]
            elif time.monotonic() > deadline:
                raise RigError(f"nsenter (pid {self.pid}) did not start its command within {timeout}s")
            else:
                time.sleep(0.005)
        return self._inner if self.poll() is None else None

    @property
    def host_pid(self) -> Optional[int]:
        """The command's PID as the host sees it (what ``os.getpid()`` returns inside); None once exited."""
        inner = self.inner_pid()
        if inner is None:
            return None
        try:
            with open(f"/proc/{inner}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        return int(line.split()[-1])
        except OSError:
            return None
        return None

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        inner = self.inner_pid()
        try:
            if inner is None:
                super().send_signal(sig)
            else:
                os.kill(inner, sig)
        except ProcessLookupError:
            pass


class Host:
    """One simulated host: ``name`` (= its hostname), ``ip``, and ways to run things in it or break it."""

    def __init__(self, rig: HostRig, index: int, ip: str, holder: _Holder) -> None:
        self.rig = rig
        self.index = index
        self.name = self.hostname = holder.label
        self.ip = ip
        self.switch_port = f"sw{index}"
        self._holder = holder

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r}, alive={self.alive})"

    @property
    def alive(self) -> bool:
        """False once the host was lost (``kill_all``) or the rig closed."""
        return self._holder.alive

    @property
    def init_pid(self) -> Optional[int]:
        """Root-namespace PID of the host's init (its PID 1)."""
        return self._holder.init_pid

    @property
    def namespaces(self) -> Dict[str, str]:
        """The host's namespaces by kind ({"net": "net:[...]", ...}), e.g. for ``processes_in_namespaces``."""
        return dict(self._holder.namespaces)

    def pids(self) -> List[int]:
        """Root-namespace PIDs of every live process in the host (its PID namespace)."""
        return processes_in_namespaces([self._holder.namespaces["pid"]]) if self.alive else []

    def nsenter_argv(self, cwd: Optional[str] = None) -> List[str]:
        """The command prefix that enters this host; ``cwd`` is a path as the host sees it.

        ``--wdns`` (not ``--wd``) because the directory must be looked up in the host's mount
        namespace: its /tmp is not the root's.
        """
        self._check_alive()
        return [self.rig.nsenter, f"--target={self._holder.init_pid}", "--net", "--uts", "--ipc", "--mount", "--pid",
                f"--wdns={cwd or _default_cwd()}", "--"]

    def popen(self, cmd: Command, *, cwd: Optional[Union[str, os.PathLike]] = None, shell: bool = False,
              **kwargs: Any) -> HostProcess:
        """Start ``cmd`` in the host; ``kwargs`` are ``subprocess.Popen``'s (env, stdout, text, ...).

        ``cwd`` (a path as the host sees it) defaults to the caller's working directory -- the shared
        filesystem makes it exist in the host too -- or to / when that is under the host's private
        /tmp or /dev/shm. ``env`` reaches the command unchanged (nsenter passes it on).
        """
        argv = ["/bin/sh", "-c", cmd] if shell else ([cmd] if isinstance(cmd, str) else [os.fspath(c) for c in cmd])
        proc = HostProcess(self.nsenter_argv(os.fspath(cwd) if cwd is not None else None) + argv, **kwargs)
        self.rig._track(proc)
        log.debug("%s: started %s (nsenter pid %d)", self.name, argv, proc.pid)
        return proc

    def run(self, cmd: Command, *, timeout: float = 60.0, check: bool = False, input: Optional[Union[str, bytes]] = None,
            capture_output: bool = False, **kwargs: Any) -> subprocess.CompletedProcess:
        """``subprocess.run`` in the host, always with a deadline: on timeout the command is SIGKILLed."""
        if timeout is None:
            raise ValueError("every wait has a deadline: give Host.run a timeout")
        if capture_output:
            kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
        if input is not None:
            kwargs["stdin"] = subprocess.PIPE
        proc = self.popen(cmd, **kwargs)
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    def link_down(self) -> None:
        """Cut the host off the network (its switch port goes down; its own eth0 loses carrier).

        Packets are then dropped, not refused: connects time out, as across a real partition.
        """
        self._check_alive()
        self.rig._switch_ip([f"link set {self.switch_port} down"], f"cutting {self.name} off")
        log.info("%s: link down", self.name)

    def link_up(self) -> None:
        """Reconnect the host (undo ``link_down``)."""
        self._check_alive()
        self.rig._switch_ip([f"link set {self.switch_port} up"], f"reconnecting {self.name}")
        log.info("%s: link up", self.name)

    def kill_all(self, timeout: float = 10.0) -> None:
        """Lose the host: SIGKILL every process in it. Its namespaces, mounts and link go with them.

        Returns once its processes are gone and its switch port has vanished (the kernel frees a
        network namespace asynchronously, a moment after its last process). Nothing runs there
        afterwards (``HostGoneError``); the rest of the rig keeps working.
        """
        if not self.alive:
            return
        deadline = time.monotonic() + timeout
        self._holder.kill(deadline)
        self.rig._wait_port_gone(self.switch_port, deadline)
        log.info("%s: killed (host lost)", self.name)

    def _check_alive(self) -> None:
        if not self.alive:
            raise HostGoneError(f"{self.name} is gone (kill_all, or its rig was closed)")


# --------------------------------------------------------------------------- the rig


class HostRig:
    """``n_hosts`` simulated hosts joined by one switch; a context manager (closing tears it all down).

    ``rig.hosts`` (also ``rig[i]``, ``iter(rig)``, ``len(rig)``); host i is ``host<i>`` at
    ``<subnet>.(10+i)``. ``shm_bytes`` and ``tmp_bytes`` size each host's /dev/shm and /tmp.
    ``timeout`` bounds the build and the teardown.
    """

    def __init__(self, n_hosts: int, subnet: str = DEFAULT_SUBNET, shm_bytes: int = DEFAULT_SHM_BYTES,
                 tmp_bytes: int = DEFAULT_TMP_BYTES, timeout: float = 30.0) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("HostRig built off the main thread: its hosts die when this thread exits (PR_SET_PDEATHSIG)")
        self.network = ipaddress.ip_network(subnet)
        self.shm_bytes = shm_bytes
        self.tmp_bytes = tmp_bytes
        self.timeout = timeout
        self.hosts: List[Host] = []
        self._holders: List[_Holder] = []
        self._procs: List[HostProcess] = []
        self._lock = threading.Lock()
        self._closed = False
        self.unshare, self.nsenter, self.ip_tool = _tool("unshare"), _tool("nsenter"), _tool("ip")
        ips = self._addresses(n_hosts)
        started = time.monotonic()
        try:
            self._build(ips)
        except BaseException:
            self._teardown(time.monotonic() + timeout, quiet=True)
            raise
        log.info("rig up: %d hosts on %s in %.2fs", n_hosts, subnet, time.monotonic() - started)

    def _addresses(self, n_hosts: int) -> List[str]:
        if n_hosts < 1:
            raise ValueError("a rig needs at least one host")
        ips = [self.network.network_address + FIRST_HOST_OFFSET + i for i in range(n_hosts)]
        if ips[-1] >= self.network.broadcast_address:
            raise ValueError(f"{self.network} has no room for {n_hosts} hosts from .{FIRST_HOST_OFFSET}")
        return [str(ip) for ip in ips]

    def _etc_hosts(self, ips: Sequence[str]) -> str:
        """Every host's /etc/hosts: names resolve to rig addresses (Spark resolves its own hostname)."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{ip} host{i}" for i, ip in enumerate(ips)]
        return "\n".join(lines) + "\n"

    def _build(self, ips: Sequence[str]) -> None:
        deadline = time.monotonic() + self.timeout
        self._switch = _Holder("switch", self.unshare, ("net", "mnt", "pid"), ["switch", "switch", "0", "0"])
        self._holders.append(self._switch)
        etc_hosts = self._etc_hosts(ips)
        for i in range(len(ips)):
            holder = _Holder(f"host{i}", self.unshare, HOST_NAMESPACES,
                             ["host", f"host{i}", str(self.tmp_bytes), str(self.shm_bytes)], etc_hosts)
            self._holders.append(holder)
        for holder in self._holders:
            holder.wait_ready(deadline)
        self.hosts = [Host(self, i, ip, holder) for i, (ip, holder) in enumerate(zip(ips, self._holders[1:]))]
        self._wire(deadline)

    def _wire(self, deadline: float) -> None:
        """The bridge, and per host a veth pair made in the switch namespace with its far end created
        straight in the host's namespace (so no link ever exists in the root one), then addresses."""
        lines = [f"link add {SWITCH_BRIDGE} type bridge", f"link set {SWITCH_BRIDGE} up"]
        for host in self.hosts:
            lines += [f"link add {host.switch_port} type veth peer name {HOST_INTERFACE} netns {host.init_pid}",
                      f"link set {host.switch_port} master {SWITCH_BRIDGE}", f"link set {host.switch_port} up"]
        self._ip(self._switch, lines, "creating the bridge and veth pairs in the switch namespace", deadline)
        for host in self.hosts:
            self._ip(host._holder, ["link set lo up", f"addr add {host.ip}/{self.network.prefixlen} dev {HOST_INTERFACE}",
                                    f"link set {HOST_INTERFACE} up"], f"addressing {host.name}", deadline)

    def _ip(self, holder: _Holder, lines: Sequence[str], what: str, deadline: float) -> None:
        """``ip -batch`` in a holder's network namespace (one process for many commands)."""
        argv = [self.nsenter, f"--target={holder.init_pid}", "--net", self.ip_tool, "-batch", "-"]
        try:
            done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True,
                                  timeout=max(1.0, _remaining(deadline)))
        except subprocess.TimeoutExpired as e:
            raise RigError(f"{what}: `ip -batch` timed out") from e
        if done.returncode != 0:
            raise RigError(f"{what} failed: {done.stderr.strip()} (the kernel needs the bridge and veth drivers, "
                           f"CONFIG_BRIDGE and CONFIG_VETH, and CAP_NET_ADMIN); commands were: {lines}")

    def _switch_ip(self, lines: Sequence[str], what: str) -> None:
        if self._closed or not self._switch.alive:
            raise HostGoneError(f"{what}: the rig is closed")
        self._ip(self._switch, lines, what, time.monotonic() + 10)

    def switch_links(self) -> List[str]:
        """Names of the links in the switch namespace (the bridge, one ``sw<i>`` per live host)."""
        argv = [self.nsenter, f"--target={self._switch.init_pid}", "--net", self.ip_tool, "-o", "link", "show"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def _wait_port_gone(self, port: str, deadline: float) -> None:
        while self._switch.alive and port in self.switch_links():
            if time.monotonic() > deadline:
                raise RigError(f"{port} is still on the switch after its host was killed")
            time.sleep(0.02)

    def _track(self, proc: HostProcess) -> None:
        """Remember processes started in hosts, so that teardown reaps their nsenter wrappers."""
        with self._lock:
            self._procs = [p for p in self._procs if p.returncode is None]
            self._procs.append(proc)

    # ---- access

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> HostRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def namespace_ids(self) -> List[str]:
        """Every namespace the rig made (switch and hosts), for ``processes_in_namespaces``."""
        return [ns for holder in self._holders for ns in holder.namespaces.values()]

    def holder_pids(self) -> List[int]:
        """Root-namespace PIDs of the holders (unshare processes) and their inits."""
        return [pid for h in self._holders for pid in (h.proc.pid, h.init_pid) if pid is not None]

    def describe(self) -> Dict[str, Any]:
        """The rig as JSON-able data: what a test needs to check from outside that it is gone."""
        return {"subnet": str(self.network),
                "hosts": [{"name": h.name, "ip": h.ip, "alive": h.alive, "init_pid": h.init_pid,
                           "holder_pid": h._holder.proc.pid, "namespaces": h.namespaces} for h in self.hosts],
                "switch": {"init_pid": self._switch.init_pid, "holder_pid": self._switch.proc.pid},
                "holder_pids": self.holder_pids(),
                "namespace_ids": self.namespace_ids()}

    # ---- teardown

    def close(self) -> None:
        """Tear everything down (idempotent) and check that no process is left in the rig's
        namespaces; raise ``RigError`` saying what is left otherwise."""
        if self._closed:
            return
        started = time.monotonic()
        self._teardown(started + self.timeout, quiet=False)
        log.info("rig torn down in %.2fs", time.monotonic() - started)

    def _teardown(self, deadline: float, quiet: bool) -> None:
        self._closed = True
        problems = []
        for holder in [*self._holders[1:], *self._holders[:1]]:  # the hosts, then the switch
            try:
                holder.kill(deadline)
            except RigError as e:
                problems.append(str(e))
        for proc in self._procs:
            try:
                proc.wait(timeout=_remaining(deadline))
            except subprocess.TimeoutExpired:
                problems.append(f"nsenter (pid {proc.pid}) of {proc.args[-1]!r} still running")
        left = processes_in_namespaces(self.namespace_ids())
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = processes_in_namespaces(self.namespace_ids())
        if left:
            problems.append(f"processes still in the rig's namespaces: {left}")
        if problems and not quiet:
            raise RigError("teardown left things behind: " + "; ".join(problems))
        for problem in problems:
            log.error("while cleaning up a failed build: %s", problem)


# --------------------------------------------------------------------------- by hand


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build a rig, print it as JSON (one line), hold it for ``--hold`` seconds, tear it down."""
    parser = argparse.ArgumentParser(prog="python -m tests.multihost.rig", description=main.__doc__)
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to keep the rig up (SIGTERM ends it early)")
    parser.add_argument("--run-in-each-host", default="", help="a command to leave running in every host")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `with` tears the rig down
    with HostRig(args.hosts) as rig:
        report = rig.describe()
        if args.run_in_each_host:
            procs = [h.popen(shlex.split(args.run_in_each_host), stdin=subprocess.DEVNULL) for h in rig]
            report["host_processes"] = [{"nsenter_pid": p.pid, "inner_pid": p.inner_pid(), "host_pid": p.host_pid}
                                        for p in procs]
        print(json.dumps(report), flush=True)
        time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
