"""Deferred Ray calls of background threads (the to_spark sweeper's releases) and the library's own
ray.shutdown() never overlap: Ray's core worker aborts the process when they do."""

from __future__ import annotations

import threading

from ray_on_spark import _ray


def _other_thread_can_take(lock) -> bool:
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)) or (got[0] and lock.release()))
    t.start()
    t.join()
    return got[0]


def test_a_deferred_call_holds_the_connection_lock_so_a_disconnect_waits_for_it(monkeypatch):
    monkeypatch.setattr(_ray, "connection_id", lambda: "gcs:1/job1")
    seen = []
    call = _ray.while_connected(lambda: seen.append(_other_thread_can_take(_ray._CONNECTION_LOCK)) or "done")
    assert call() == "done" and seen == [False]  # held while it ran
    assert _other_thread_can_take(_ray._CONNECTION_LOCK)  # and released after


def test_a_deferred_call_does_nothing_once_the_connection_it_was_made_for_ended(monkeypatch):
    monkeypatch.setattr(_ray, "connection_id", lambda: "gcs:1/job1")
    call = _ray.while_connected(lambda: "called")
    monkeypatch.setattr(_ray, "connection_id", lambda: None)  # ray.shutdown() ran
    assert call() is None
    monkeypatch.setattr(_ray, "connection_id", lambda: "gcs:2/job7")  # a new cluster: not this call's
    assert call() is None
