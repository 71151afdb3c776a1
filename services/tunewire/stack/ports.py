"""Free TCP ports on loopback, so that several stacks (or test sessions) can run side by side."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"
"""Every embedded component listens here only: nothing of the stack is reachable from outside."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing is listening on right now.

    The kernel picks the port; we close the socket at once and hand the number to a child
    process. Another program could grab it in between, but ephemeral ports are handed out
    round-robin, so a collision within the second a component takes to start is unlikely.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_or_free(port: int) -> int:
    """``port``, or a free one when it is 0 (the usual convention for "pick one for me")."""
    return port if port else free_port()
