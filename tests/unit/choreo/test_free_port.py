"""`free_port` never hands out one port twice in a process: a stack's parts get theirs one
after another before any binds (a fresh-clone CI run once gave two parts the same port)."""

from __future__ import annotations

import socket

from choreo.testing import free_port


def test_ports_handed_out_one_after_another_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20_000 <= port < 32_768 for port in ports)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", ports[-1]))
