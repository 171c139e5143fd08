"""PID 1 of a rig's namespaces: ``python -I -S hostinit.py MODE HOSTNAME TMP_BYTES SHM_BYTES``.

Started by ``rig._Holder`` through ``unshare ... --fork --pid --mount-proc``, so it already runs in
the new namespaces with its own /proc. In MODE ``host`` it first makes the host: a private tmpfs
on /tmp and a size-limited one on /dev/shm, /etc/hosts bind-mounted from ``$ROS_MH_ETC_HOSTS``,
and the hostname. Then it prints ``ready`` and, holding nothing open, reaps children forever.

Why an init that reaps (not ``sleep infinity``): processes orphaned in a host -- such as the
daemons ``ray start`` leaves behind -- are reparented to PID 1, which must reap them or their
zombies would stay in the host's process table. Why mount from here: it costs no extra process.
Standard library only (run with ``-I -S``); it must not import anything from the repository.
"""

import ctypes
import os
import signal
import socket
import sys

MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
libc = ctypes.CDLL(None, use_errno=True)


def mount(source, target, fstype, flags, data):
    """mount(2); raises OSError naming what was refused (the rig reports it)."""
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                  data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s: %s" % (fstype or "--bind " + source, target, os.strerror(err)))


def make_host(hostname, tmp_bytes, shm_bytes, etc_hosts, keep):
    """``keep``: directories under /tmp that must stay visible in the host (the repository and its
    venv, when the checkout itself lives in /tmp, as a CI's clean clone may): each is opened before
    the private /tmp hides it, and bind-mounted back at the same path from that descriptor."""
    held = [(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)) for path in keep]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%s,mode=1777" % tmp_bytes)
    for path, fd in held:
        os.makedirs(path, exist_ok=True)
        mount("/proc/self/fd/%d" % fd, path, None, MS_BIND, None)
        os.close(fd)
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=%s,mode=1777" % shm_bytes)
    staged = "/tmp/.ros-mh-etc-hosts"
    with open(staged, "w") as f:
        f.write(etc_hosts)
    mount(staged, "/etc/hosts", None, MS_BIND, None)
    os.unlink(staged)  # the bind mount keeps the file; the host's /tmp starts empty
    socket.sethostname(hostname)


def reap_forever():
    """Reap every child as it exits; SIGCHLD stays blocked so none is missed between passes."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    os.write(1, b"ready\n")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        signal.sigwait({signal.SIGCHLD})


if __name__ == "__main__":
    mode, name, tmp, shm = sys.argv[1:5]
    if mode == "host":
        keep = [p for p in os.environ.get("ROS_MH_KEEP", "").split(os.pathsep) if p]
        make_host(name, tmp, shm, os.environ["ROS_MH_ETC_HOSTS"], keep)
    reap_forever()
