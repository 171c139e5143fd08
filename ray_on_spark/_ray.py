"""The one seam to Ray's internals: the GCS client, token authentication, Ray Data's plan classes.

Everything else in the library uses Ray's public API, and reaches what is private
(``ray._raylet``, ``ray._private``, ``ray.data._internal``) through the named functions
here; a Ray upgrade that moves one of them breaks this module only, and each function
says what it falls back to.

Readiness in this library is always a probe on the GCS ("does it answer", "how many
alive nodes carry our labels"), never a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, MutableMapping, Optional, Sequence, Tuple

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow
    from ray.data import Dataset

logger = logging.getLogger(__name__)

AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
_AUTH_KEYS = (AUTH_MODE_ENV, AUTH_TOKEN_ENV, AUTH_TOKEN_PATH_ENV)


# ---------------------------------------------------------------- token authentication
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


def auth_env(token: Optional[str] = None, token_path: Optional[str] = None) -> Dict[str, Optional[str]]:
    """The environment that makes a Ray process use ``token`` (or the token in ``token_path``).

    Neither given: authentication disabled. A value of None means "unset the variable".
    The one description of Ray's auth variables; every process the library starts, and
    this process when it talks to a cluster, gets its environment from here.
    """
    if token:
        return {AUTH_MODE_ENV: "token", AUTH_TOKEN_ENV: token, AUTH_TOKEN_PATH_ENV: None}
    if token_path:
        return {AUTH_MODE_ENV: "token", AUTH_TOKEN_ENV: None, AUTH_TOKEN_PATH_ENV: token_path}
    return {AUTH_MODE_ENV: "disabled", AUTH_TOKEN_ENV: None, AUTH_TOKEN_PATH_ENV: None}


def apply_env(env: MutableMapping[str, str], values: Dict[str, Optional[str]]) -> None:
    """Set ``values`` in ``env`` (None: remove the variable)."""
    for key, value in values.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value


def refresh_auth_config() -> None:
    """Make this process's Ray core re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN.

    Ray caches both at first use; after the environment changes (cluster up or
    down) the driver's next ``ray.init()`` and the GCS probes must see the new values.
    """
    if not token_auth_supported():
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def use_auth(token: Optional[str] = None, token_path: Optional[str] = None) -> Dict[str, Optional[str]]:
    """Make this process use ``token`` (or ``token_path``) from now on; returns the values it replaced."""
    wanted = auth_env(token, token_path)
    saved = {k: os.environ.get(k) for k in wanted}
    if saved != wanted:  # re-reading Ray's config is only done when something differs
        apply_env(os.environ, wanted)
        refresh_auth_config()
    return saved


def restore_auth(saved: Dict[str, Optional[str]]) -> None:
    """Undo :func:`use_auth` with the values it returned."""
    if {k: os.environ.get(k) for k in saved} != saved:
        apply_env(os.environ, saved)
        refresh_auth_config()


@contextlib.contextmanager
def auth_context(token: Optional[str]) -> Iterator[None]:
    """Temporarily expose a cluster's token to this process's Ray core (for GCS probes)."""
    saved = use_auth(token)
    try:
        yield
    finally:
        restore_auth(saved)


def current_token() -> Optional[str]:
    """The token this process's Ray uses, when its cluster has token authentication, else None."""
    if os.environ.get(AUTH_TOKEN_ENV):  # a Ray-on-Spark cluster's own token
        return os.environ[AUTH_TOKEN_ENV]
    try:
        from ray._private.authentication.authentication_token_setup import get_authentication_mode
        from ray._raylet import AuthenticationMode, AuthenticationTokenLoader

        if get_authentication_mode() != AuthenticationMode.TOKEN:
            return None
        loader = AuthenticationTokenLoader.instance()
        if loader.has_token(ignore_auth_mode=True):
            return loader.get_raw_token(ignore_auth_mode=True)
    except Exception as e:  # older Ray: no token authentication
        logger.debug("no Ray auth token: %s", e)
    return None


# ---------------------------------------------------------------- this process's connection
def connection_id() -> Optional[str]:
    """This process's Ray connection (its GCS address and job id), or None when not connected.

    Why: Ray's ``get``/``wait``/``kill`` and every actor call run ``ray.init()`` themselves when
    the process is not connected. A background thread of ours that calls Ray after the user's
    ``ray.shutdown()`` (or a cluster's shutdown) would silently start a new local Ray instance
    on the driver -- or connect to the next cluster through ``RAY_ADDRESS``. Such threads note
    the connection they started under and call Ray only while it is still the current one
    (:func:`while_connected`).
    """
    import ray

    if not ray.is_initialized():  # never auto-inits
        return None
    try:
        context = ray.get_runtime_context()
        return f"{context.gcs_address}/{context.get_job_id()}"
    except Exception as e:  # shut down between the two calls
        logger.debug("no Ray connection: %s", e)
        return None


#: Held while a deferred call (:func:`while_connected`) runs, and while the library itself ends
#: the driver's connection (:func:`disconnect`): Ray's core worker *aborts the process* ("The core
#: worker has already been shutdown") when a thread calls into it while another shuts it down --
#: a check of the connection followed by the call is not enough on its own (seen once in CI: a
#: to_spark release from the sweeper thread during shutdown_ray_cluster killed the driver).
_CONNECTION_LOCK = threading.RLock()


def while_connected(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn``, to be called later: it runs only while this process still has the Ray connection it
    has now (else it does nothing and returns None), so that it never starts or joins a Ray.
    ``fn`` must be quick (an actor call's submission): the library's disconnect waits for it."""
    connection = connection_id()

    def call() -> Any:
        with _CONNECTION_LOCK:
            if connection is None or connection_id() != connection:
                logger.debug("not calling %s: the Ray connection it was made for has ended", fn)
                return None
            return fn()

    return call


def disconnect() -> None:
    """``ray.shutdown()``, never while a deferred call of ours is inside Ray (see ``_CONNECTION_LOCK``)."""
    import ray

    with _CONNECTION_LOCK:
        ray.shutdown()


# ---------------------------------------------------------------- Ray Client endpoints
#: GCS address -> the ``ray://`` address of that cluster's Ray Client server, for the clusters this
#: process started (a Ray-on-Spark head runs one). A Spark task on a host with no Ray node of the
#: cluster cannot ``ray.init()`` its GCS (Ray needs a raylet on the caller's host); it connects as
#: a Ray Client instead.
_CLIENT_ADDRESSES: Dict[str, str] = {}


def register_client_address(gcs_address: str, client_address: Optional[str]) -> None:
    """Note (or with None forget) the Ray Client address of the cluster at ``gcs_address``."""
    if client_address is None:
        _CLIENT_ADDRESSES.pop(gcs_address, None)
    else:
        _CLIENT_ADDRESSES[gcs_address] = client_address


def client_address_for(gcs_address: str) -> Optional[str]:
    return _CLIENT_ADDRESSES.get(gcs_address)


# ---------------------------------------------------------------- the GCS
@dataclass(frozen=True)
class NodeView:
    """One node as the GCS reports it."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    labels: Dict[str, str] = field(default_factory=dict)
    resources: Dict[str, float] = field(default_factory=dict)
    death_reason: str = ""
    start_time_ms: int = 0
    port: int = 0  # the raylet's (node manager's) port


def gcs_client(address: str) -> Any:
    """A ``ray._raylet.GcsClient`` for ``address`` (uses this process's auth settings)."""
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def list_nodes(client: Any, timeout: float = 2.0) -> List[NodeView]:
    """Every node the GCS knows, dead ones included."""
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
                port=int(info.node_manager_port),
            )
        )
    return out


def session_name(client: Any, timeout: float = 2.0) -> Optional[str]:
    """The cluster's session name as its GCS publishes it (``None`` until the head wrote it).

    The head writes it right after its GCS starts, before its dashboard and raylet: what a
    worker node's ``ray start`` reads first (under Ray's own 2 s retry sleeps).
    """
    value = client.internal_kv_get(b"session_name", b"session", timeout=timeout)
    return value.decode() if value is not None else None


def can_skip_head_node_lookup() -> bool:
    """Whether :func:`skip_head_node_lookup` can work with the installed Ray (the hook it replaces exists)."""
    try:
        import ray._private.node as node_module
        from ray.core.generated.gcs_pb2 import GcsNodeInfo  # noqa: F401
    except ImportError:  # pragma: no cover - another Ray layout
        return False
    return callable(getattr(node_module, "get_all_node_info_until_retrieved", None))


def skip_head_node_lookup(head_temp_dir: str, session: str) -> None:
    """Make this process's worker ``ray start`` take the head's directories as given, not wait for them.

    Why: a worker node's ``ray start`` asks the GCS for the head *node* (Ray 2.60,
    ``Node.__init__``) only to learn the head's temp and session dirs -- for its default temp
    dir, which we always set, and to tell a shared spill dir from the head's default one. The
    head node appears once the head's dashboard has started and its raylet registered, 2-3 s
    after its GCS answers; every worker node waited for that. The driver knows the head's
    ``--temp-dir`` and the GCS publishes the session name, so the same record is built here
    and the worker node starts beside the head instead of after it. Only Ray's lookup of the
    head node (``is_head_node`` selector) is answered this way; any other call goes to Ray.
    """
    import ray._private.node as node_module
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    ray_lookup = node_module.get_all_node_info_until_retrieved
    head = GcsNodeInfo(state=GcsNodeInfo.GcsNodeState.ALIVE, is_head_node=True, temp_dir=head_temp_dir,
                       session_dir=os.path.join(head_temp_dir, session))

    def lookup(gcs_client: Any, node_selectors: Any = None, *args: Any, **kwargs: Any) -> List[Any]:
        if node_selectors and all(getattr(s, "is_head_node", False) for s in node_selectors):
            return [head]
        return ray_lookup(gcs_client, node_selectors, *args, **kwargs)

    node_module.get_all_node_info_until_retrieved = lookup


def available_resources_per_node() -> Dict[str, Dict[str, float]]:
    """Free resources of every alive node, by node id (needs ``ray.init()``; may lag a moment behind)."""
    from ray._private.state import available_resources_per_node as per_node

    return {str(k): dict(v) for k, v in per_node().items()}


def resolve_ip_for_localhost(host: str) -> str:
    """Ray's own choice of address for a node on ``host`` (a loopback name becomes the node IP)."""
    import ray._private.services as services

    return services.resolve_ip_for_localhost(host)


def ray_start_option_names() -> List[str]:
    """Parameter names of the installed ``ray start`` (click command), for validating node options."""
    from ray.scripts.scripts import start  # imported lazily: it pulls in click and ray

    return [p.name for p in start.params if p.name]


# ---------------------------------------------------------------- Ray Data
def dataset_of_blocks(refs: list, sizes: Sequence[Tuple[int, int]], schema: "pyarrow.Schema") -> "Dataset":
    """A materialized Dataset of Arrow blocks of ``schema`` whose (rows, bytes) are known.

    Built as ``ray.data.from_arrow_refs`` builds it, except that it does not run one Ray
    task per block to learn what the Spark tasks already reported: each such task needs a
    free CPU slot and maps its block: ~15 ms for 4 blocks here, and a wait for ever when the
    executors hold every CPU of Ray (RayDP's usual set-up). With a Ray whose internals
    differ, ``from_arrow_refs`` is used.
    """
    import ray

    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.logical.operators.from_operators import FromArrow
        from ray.data._internal.stats import DatasetStats
        from ray.data.block import BlockMetadataWithSchema
        from ray.data.context import DataContext
        from ray.data.dataset import MaterializedDataset

        metadata = [BlockMetadataWithSchema(num_rows=rows, size_bytes=int(nbytes), exec_stats=None, input_files=None,
                                            schema=schema) for rows, nbytes in sizes]
        stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
        context = DataContext.get_current().copy()
        return MaterializedDataset(LogicalPlan(FromArrow(refs, metadata), context), context, stats)
    except Exception as e:  # ImportError, TypeError, AttributeError: another Ray
        logger.debug("from_spark: Ray Data internals differ (%s); using from_arrow_refs", e)
        return ray.data.from_arrow_refs(refs)


def block_refs(ds: "Dataset") -> list:
    """References to a Dataset's blocks (executing it if it is lazy), without copying them."""
    return [ref for bundle in ds.iter_internal_ref_bundles() for ref in bundle.block_refs]
