"""Multi-host tests: several simulated hosts (Linux namespaces, see ``rig.py``) on this one machine.

Every test under tests/multihost carries the ``multihost`` mark (select: ``-m multihost``; leave
out: ``-m 'not multihost'``). They need root (CAP_SYS_ADMIN): without it the rig fails loudly,
saying what the kernel refused -- it never skips.

The session fixture ``rig`` (4 hosts) is shared by every test of the session. A test that cuts a
link restores it (``try/finally``); a test that loses a host (``kill_all``) or must see a fresh
rig builds its own ``HostRig`` -- they are cheap (well under a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from .rig import HostRig

RIG_HOSTS = 4
HERE = Path(__file__).resolve().parent


def pytest_configure(config):
    config.addinivalue_line("markers", "multihost: runs on the namespace multi-host rig (tests/multihost); needs root")


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/multihost, so that later test files need not remember to."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.multihost)


@pytest.fixture(scope="session")
def rig() -> Iterator[HostRig]:
    """Four hosts, host0..host3 at 198.51.100.10..13, for the whole session; torn down (and
    checked to leave nothing) at its end."""
    with HostRig(RIG_HOSTS) as shared:
        yield shared
