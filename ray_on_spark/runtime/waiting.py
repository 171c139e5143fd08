"""The one deadline loop: every wait in the library polls a readiness probe until a deadline.

Never a bare sleep: a wait names what it waits for, gives up at its deadline, and can be
cut short by a ``check`` that raises as soon as waiting is pointless (the process being
waited for has died, a job has failed).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A wait reached its deadline; the message names what it waited for."""


def deadline_after(timeout: float) -> float:
    """The monotonic-clock time ``timeout`` seconds from now."""
    return time.monotonic() + timeout


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (from :func:`deadline_after`), never below 0."""
    return max(0.0, deadline - time.monotonic())


def _ready(result: object) -> bool:
    return result is not None and result is not False


def poll_until(
    probe: Callable[[], Optional[T]],
    *,
    timeout: float,
    poll: float = 0.1,
    check: Optional[Callable[[], None]] = None,
) -> Optional[T]:
    """Call ``probe`` until it returns a value other than None/False; that value, or None at the deadline.

    For best-effort waits whose caller decides what a deadline means (log, kill, return
    what there is). ``check`` runs every round and may raise to stop at once.
    Exceptions of ``probe`` propagate; :func:`wait_until` is the variant that tolerates them.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        result = probe()
        if _ready(result):
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        time.sleep(min(poll, remaining))


def wait_until(
    probe: Callable[[], Optional[T]],
    *,
    timeout: float,
    what: str,
    poll: float = 0.1,
    check: Optional[Callable[[], None]] = None,
) -> T:
    """Call ``probe`` until it returns a value other than None/False, or raise :class:`WaitTimeout`.

    A probe that raises counts as "not yet" (a server that does not answer yet); the last
    such error is named in the timeout's message. ``check`` runs each round and may raise
    to abort early (e.g. a worker failed), so a broken start is reported at once instead
    of at the deadline.
    """
    last_error: Optional[BaseException] = None

    def attempt() -> Optional[T]:
        nonlocal last_error
        try:
            return probe()
        except Exception as e:  # not up yet
            last_error = e
            return None

    result = poll_until(attempt, timeout=timeout, poll=poll, check=check)
    if result is None:
        raise WaitTimeout(
            f"Timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error})" if last_error else "")
        )
    return result
