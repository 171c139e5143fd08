"""Every listening TCP socket of a host, as one JSON line: ``python -m tests.multihost.listeners``.

Run inside a host (its own network namespace: psutil sees only that host's sockets). Each entry:
``{"address", "port", "pid", "process"}``, where ``process`` is the start of its command line.
"""

from __future__ import annotations

import json

import psutil


def listening() -> list:
    found = []
    for c in psutil.net_connections(kind="tcp"):
        if c.status != psutil.CONN_LISTEN:
            continue
        try:
            cmd = " ".join(psutil.Process(c.pid).cmdline()) if c.pid else ""
        except psutil.Error:
            cmd = ""
        found.append({"address": c.laddr.ip, "port": c.laddr.port, "pid": c.pid, "process": cmd[:160]})
    return sorted(found, key=lambda e: (e["process"], e["port"]))


if __name__ == "__main__":
    print(json.dumps(listening()))
