"""Private directories (0700) and files (0600): secrets, tokens and temp dirs are the user's alone.

Every secret file the library writes (the node launcher's secret, a global cluster's
token and address) goes through :func:`write_private_file`, and every cache and state
directory through :func:`private_dir`, so no second copy can get the mode wrong.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Optional

#: A unix socket path has at most 107 bytes. Ray puts its deepest socket at
#: ``<temp dir>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store`` (64 bytes after the
#: temp dir with a 7-digit pid), so Ray's temp dir may have 43 characters; 40 leaves room.
RAY_TEMP_DIR_MAX_CHARS = 40
#: Where a short alias of a longer Ray temp dir is made (a symlink named ros-<8 hex>).
SHORT_ALIAS_BASE = "/tmp"


def private_dir(path: str) -> str:
    """``path`` made (with parents) and set to 0700; returns it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def private_temp_dir(prefix: str, root: Optional[str] = None) -> str:
    """A new temp dir (``mkdtemp``: 0700, unique) under ``root`` (made if missing) or the system's temp dir."""
    if root is not None:
        os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=root)


def short_alias(path: str, base: str = SHORT_ALIAS_BASE) -> Optional[str]:
    """A short symlink to the directory ``path`` when Ray's socket paths under ``path`` would be too long.

    Ray 2.60's ``ray start`` cannot name its sockets, and it keeps them under its temp dir;
    under a long ``ray_temp_root_dir`` (Databricks' ``/local_disk0/tmp`` plus our dirs)
    they pass the 107-byte limit of unix sockets. Ray is then given ``<base>/ros-<8 hex>``,
    a symlink to ``path``: logs and spilled objects still go to ``path``, and the socket
    paths stay short. Returns None when ``path`` is short enough. The caller removes the
    link (the node's supervisor does: ``--cleanup-link``).
    """
    if len(path) <= RAY_TEMP_DIR_MAX_CHARS:
        return None
    if not os.path.isdir(base) or not os.access(base, os.W_OK | os.X_OK):
        raise OSError(f"Ray's temp dir {path!r} is {len(path)} characters, too long for Ray's unix sockets "
                      f"(at most {RAY_TEMP_DIR_MAX_CHARS}), and {base!r} is not writable to hold a short link to it; "
                      f"use a ray_temp_root_dir of at most {RAY_TEMP_DIR_MAX_CHARS - 28} characters or make {base} "
                      "writable")
    os.makedirs(path, mode=0o700, exist_ok=True)
    for _ in range(100):
        alias = os.path.join(base, "ros-" + secrets.token_hex(4))
        try:
            os.symlink(path, alias)
        except FileExistsError:
            continue
        return alias
    raise OSError(f"no free short link name under {base} for Ray's temp dir {path!r}")


def write_private_file(path: str, text: str, *, exclusive: bool = False) -> str:
    """Write ``text`` to ``path`` with mode 0600; returns ``path``.

    ``exclusive``: the file must not exist yet (``O_EXCL``: a file planted beforehand by
    someone else is an error, not something to write a secret into). Otherwise the file
    is replaced atomically, so a reader sees the old content or the new, never a part.
    """
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def remove_file(path: str) -> None:
    """Remove ``path`` (a file or a symlink) if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def cache_dir(*parts: str) -> str:
    """``$XDG_CACHE_HOME/ray_on_spark/<parts>`` (default ``~/.cache``); not created (see :func:`private_dir`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ray_on_spark", *parts)
