"""Private directories (0700) and files (0600): secrets, tokens and temp dirs are the user's alone.

Every secret file the library writes (the node launcher's secret, a global cluster's
token and address) goes through :func:`write_private_file`, and every cache and state
directory through :func:`private_dir`, so no second copy can get the mode wrong.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional


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
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def cache_dir(*parts: str) -> str:
    """``$XDG_CACHE_HOME/ray_on_spark/<parts>`` (default ``~/.cache``); not created (see :func:`private_dir`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ray_on_spark", *parts)
