"""A worker node's ``ray start``, held until the head's GCS is up, then let go at once.

Why: worker nodes start in parallel with the head (the barrier job is submitted as the head
starts), so a worker's ``ray start --address`` usually reaches the head before the head is
up. Ray then polls with fixed sleeps -- 1 s between GCS connects, 2 s between reads of the
session name, 2 s between asks for the head node's info -- and a worker that arrives a
moment early loses up to two seconds to one of them.

And Ray's worker ``ray start`` waits for the head *node*: it asks the GCS for it only to
learn the head's temp and session dirs, yet the head node registers only once the head's
dashboard has started and then its raylet, 2-3 s after the GCS answers (Ray starts them one
after the other). Given the head's temp dir (``--head-temp-dir``, which the driver knows)
this wrapper waits only for the GCS's session name, hands Ray that record itself
(:func:`ray_on_spark._ray.skip_head_node_lookup`), and the worker node starts beside the
head's dashboard and raylet instead of after them -- the one step the plain ``ray start``
floor (head, then workers) cannot overlap. Without it (or with a Ray that lacks the hook)
it waits for an alive head node, as before.

Each wait asks the GCS every 0.1 s (after its port listens: a client made earlier blocks
for Ray's whole connect timeout), then runs ``ray start`` in this same process, whose own
waits pass at their first try. Ray's CLI takes about a second of CPU to import. On another
host than the head (``--import-early``) that import overlaps the head's start; on the head's
own host it waits until the wait is over, since before that it would only take CPU from the
head's GCS (measured on a 2-core host, when workers still waited for the head node: 1.14 x
the floor importing early, 1.06 x importing late). If the head is not there within
``--wait`` seconds it exits 1, saying so (the supervisor reports it with the log's tail).

Usage: ``python -m ray_on_spark.on_spark.join_head --address HOST:PORT --wait S [--head-temp-dir DIR]
[--import-early] -- start ...``
(the arguments after ``--`` are ``ray``'s own). Uses this process's Ray auth environment.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, List, Optional

from ray_on_spark import _ray
from ray_on_spark.runtime.ports import port_open
from ray_on_spark.runtime.waiting import WaitTimeout, wait_until

#: Seconds between asks; Ray's own loops sleep 1-2 s.
POLL_S = 0.1


class _GcsProbe:
    """A question to the head's GCS, asked until it says yes. One GCS client, made once the GCS
    port accepts (made earlier, it would block for Ray's whole connect timeout, past our deadline)."""

    def __init__(self, address: str):
        self.address = address
        self._client: Optional[Any] = None

    def __call__(self) -> bool:
        if self._client is None:
            host, port = self.address.rsplit(":", 1)
            if not port_open(host, int(port)):
                return False
            self._client = _ray.gcs_client(self.address)
        return self.ask(self._client)

    def ask(self, client: Any) -> bool:
        raise NotImplementedError


class _SessionProbe(_GcsProbe):
    """Has the head's GCS published the cluster's session name? (Written as the GCS starts,
    before the head's dashboard and raylet: all a worker node's ``ray start`` needs from the head
    once it is told the head's directories.)"""

    session_name: Optional[str] = None

    def ask(self, client: Any) -> bool:
        self.session_name = _ray.session_name(client, timeout=1.0)
        return self.session_name is not None


class _HeadProbe(_GcsProbe):
    """Is the head node registered and alive?"""

    def ask(self, client: Any) -> bool:
        return any(v.alive and v.is_head for v in _ray.list_nodes(client, timeout=1.0))


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m ray_on_spark.on_spark.join_head --address HOST:PORT --wait S [--head-temp-dir DIR] "
              "[--import-early] -- start ...", file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser(prog="ray_on_spark.on_spark.join_head")
    p.add_argument("--address", required=True, help="the head's GCS address, HOST:PORT")
    p.add_argument("--wait", type=float, required=True,
                   help="seconds to wait for the head (its GCS with --head-temp-dir, else its node) to be there")
    p.add_argument("--head-temp-dir", default=None,
                   help="the head's --temp-dir: start once the GCS is up, without waiting for the head node")
    p.add_argument("--import-early", action="store_true",
                   help="import Ray's CLI before waiting (this host is not the head's)")
    args = p.parse_args(argv[:split])
    if args.import_early:
        import ray.scripts.scripts  # noqa: F401  (cached for the import below)
    deadline = time.monotonic() + args.wait
    # Nothing here imports Ray before the GCS port listens (on the head's host that import
    # would only take CPU from the head): whether this Ray has the hook is asked afterwards.
    session = _SessionProbe(args.address) if args.head_temp_dir is not None else None
    early = session is not None
    try:
        if session is not None:
            wait_until(session, timeout=args.wait, poll=POLL_S, what=f"the Ray head's GCS at {args.address} to answer")
            early = _ray.can_skip_head_node_lookup()
        if not early:
            wait_until(_HeadProbe(args.address), timeout=max(0.0, deadline - time.monotonic()), poll=POLL_S,
                       what=f"the Ray head node at {args.address} to register")
    except WaitTimeout as e:
        print(f"ray_on_spark: not starting this worker node: {e}", file=sys.stderr, flush=True)
        return 1
    import ray.scripts.scripts as ray_cli

    if early:
        assert session is not None and session.session_name is not None and args.head_temp_dir is not None
        _ray.skip_head_node_lookup(args.head_temp_dir, session.session_name)

    sys.argv = ["ray", *argv[split + 1:]]
    return ray_cli.main()


if __name__ == "__main__":
    sys.exit(main())
