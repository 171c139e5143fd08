"""Unit tests for ray_on_spark.runtime.ports."""

from __future__ import annotations

import socket
from contextlib import ExitStack

import pytest

from ray_on_spark.runtime.ports import free_ports, port_open


@pytest.mark.parametrize("host", ["", "127.0.0.1"])
def test_free_ports_are_distinct_ints_that_can_be_bound(host):
    ports = free_ports(8, host)
    assert len(ports) == 8
    assert all(type(p) is int and 0 < p < 65536 for p in ports)
    assert len(set(ports)) == 8
    with ExitStack() as stack:
        for p in ports:  # all of them at once: they were released and do not clash
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, p))
            s.listen()


def test_free_ports_of_zero_is_empty():
    assert free_ports(0) == []


def test_free_ports_differ_between_calls_often_enough_to_be_os_chosen():
    seen = set()
    for _ in range(5):
        seen.update(free_ports(2, "127.0.0.1"))
    assert len(seen) > 2


def test_port_open_is_true_for_a_listening_socket_and_false_after_it_closes():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        port = s.getsockname()[1]
        assert port_open("127.0.0.1", port)
    finally:
        s.close()
    assert not port_open("127.0.0.1", port)


def test_port_open_is_false_for_a_bound_but_not_listening_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        assert not port_open("127.0.0.1", s.getsockname()[1])



def test_port_state_tells_a_refusal_from_an_open_port():
    import socket

    from ray_on_spark.runtime.ports import port_state

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert port_state("127.0.0.1", port) == "open"
    assert port_state("127.0.0.1", port) == "refused"  # nothing listens: proof the process is gone


# ---------------------------------------------------------------- a stopped head vs a lost network
from ray_on_spark.runtime.ports import HeadVerdict, HeadWatch  # noqa: E402


def test_two_refusals_in_a_row_prove_the_head_gone_one_does_not():
    watch = HeadWatch(90, now=0)
    assert watch.observe("refused", 1) is HeadVerdict.WAITING  # a reset as a link returns
    assert watch.observe("open", 2) is HeadVerdict.UP
    assert watch.observe("refused", 3) is HeadVerdict.WAITING
    assert watch.observe("refused", 4) is HeadVerdict.GONE


def test_silence_is_ridden_out_until_the_patience_since_the_head_last_answered():
    watch = HeadWatch(90, now=0)
    assert watch.observe("silent", 50) is HeadVerdict.WAITING
    assert watch.observe("open", 60) is HeadVerdict.UP
    assert watch.observe("silent", 140) is HeadVerdict.WAITING and watch.silent_for(140) == 80
    assert watch.observe("silent", 151) is HeadVerdict.UNREACHABLE


def test_silence_between_refusals_resets_the_count():
    watch = HeadWatch(90, now=0)
    assert [watch.observe(s, t) for t, s in enumerate(["refused", "silent", "refused"], 1)] == [HeadVerdict.WAITING] * 3
