"""What a process inside a host sees, as one JSON line: ``python -m tests.multihost.probe NAME...``.

Why a module run with ``-m`` from inside a host: it proves that the repository and the venv (with
psutil, as Ray uses it) work in a host exactly as a later Ray or Spark process will be started.
``NAME...`` are hostnames to resolve; ``ROS_MH_PROBE_FILE`` names a file to look for in /tmp.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

import psutil

UNROUTED = ("192.0.2.1", 9)  # TEST-NET-1: with no default route, connecting must fail at once, sending nothing


def route_out() -> str:
    """The errno name of connecting outside the rig's subnet ("ENETUNREACH" when there is no way out)."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(UNROUTED)
        return "connected"
    except OSError as e:
        return errno.errorcode.get(e.errno, repr(e))
    finally:
        s.close()


def seen(names: list) -> dict:
    addrs = psutil.net_if_addrs()
    shm = os.statvfs("/dev/shm")
    return {
        "hostname": socket.gethostname(),
        "interfaces": sorted(addrs),
        "addresses": sorted(a.address for nic in addrs.values() for a in nic if a.family == socket.AF_INET),
        "resolved": {name: socket.gethostbyname(name) for name in names},
        "route_out": route_out(),
        "shm_bytes": shm.f_blocks * shm.f_frsize,
        "file_in_tmp": os.path.exists(os.path.join("/tmp", os.environ.get("ROS_MH_PROBE_FILE", "-"))),
        "pid": os.getpid(),
        "processes": {p.pid: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])},
        "cwd": os.getcwd(),
        "env": os.environ.get("ROS_MH_PROBE_ENV"),
    }


if __name__ == "__main__":
    print(json.dumps(seen(sys.argv[1:])))
