"""Talking to the Ray head's GCS from the driver: authentication and node probes.

Readiness in this library is always a probe on the GCS ("does it answer", "how many
alive nodes carry our labels"), never a sleep.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, TypeVar

logger = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"

T = TypeVar("T")


def token_auth_supported() -> bool:
    """Whether the installed Ray has token authentication (Ray >= 2.52)."""
    try:
        from ray._raylet import AuthenticationTokenLoader  # noqa: F401

        return True
    except ImportError:
        return False


def new_token() -> str:
    """A fresh random token in Ray's own format."""
    try:
        from ray._private.authentication.authentication_token_generator import (
            generate_new_authentication_token,
        )

        return generate_new_authentication_token()
    except ImportError:  # pragma: no cover - older Ray
        import secrets

        return secrets.token_hex(32)


def refresh_auth_config() -> None:
    """Make this process's Ray core re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN.

    Ray caches both at first use; after we change the environment (cluster up or
    down) the driver's next ``ray.init()`` and our GCS probes must see the new values.
    """
    if not token_auth_supported():
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class NodeView:
    node_id: str
    address: str
    alive: bool
    is_head: bool
    labels: Dict[str, str] = field(default_factory=dict)
    resources: Dict[str, float] = field(default_factory=dict)
    death_reason: str = ""
    start_time_ms: int = 0


def gcs_client(address: str):
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def list_nodes(client, timeout: float = 2.0) -> List[NodeView]:
    infos = client.get_all_node_info(timeout=timeout)
    out = []
    for node_id, info in infos.items():
        out.append(
            NodeView(
                node_id=node_id.hex() if hasattr(node_id, "hex") else str(node_id),
                address=info.node_manager_address,
                alive=info.state == 0,
                is_head=bool(info.is_head_node),
                labels=dict(info.labels),
                resources=dict(info.resources_total),
                death_reason=info.death_info.reason_message if info.HasField("death_info") else "",
                start_time_ms=int(info.start_time_ms),
            )
        )
    return out


def wait_until(
    probe: Callable[[], Optional[T]],
    *,
    timeout: float,
    what: str,
    poll: float = 0.1,
    check: Optional[Callable[[], None]] = None,
) -> T:
    """Call ``probe`` until it returns something other than None, or raise TimeoutError.

    ``check`` runs each round and may raise to abort early (e.g. a worker failed), so
    a broken start is reported at once instead of at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while True:
        if check is not None:
            check()
        try:
            result = probe()
            if result is not None:
                return result
        except Exception as e:  # the GCS may not answer yet
            last_error = e
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(poll)
