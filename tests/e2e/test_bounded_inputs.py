"""A running service refuses a gigabyte body, with or without a token, and keeps its memory.

The body is streamed over a plain socket in chunked encoding (no ``Content-Length`` to refuse
it by), as a careless or hostile client would, until the service answers or stops reading.
"""

from __future__ import annotations

import json
import socket
import urllib.parse

import pytest

from tests.support.stacks import TOKEN
from tunewire.stack import embedded

GIB = 1024**3
CHUNK = b"x" * (1024 * 1024)
GROWTH_LIMIT = 64 * 1024 * 1024
"""Allowed growth of the service's resident memory: far below the body, above noise."""


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def service_pid(stack: embedded.EmbeddedStack, name: str) -> int:
    state = json.loads(stack.state_file.read_text(encoding="utf-8"))
    (pid,) = [int(p["pid"]) for p in state["processes"] if p["name"] == name]
    return pid


def stream_gigabyte(url: str, path: str, token: str | None) -> tuple[int, int]:
    """POST a 1 GiB chunked body; the status the service answered and the bytes it took."""
    parsed = urllib.parse.urlsplit(url)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {parsed.netloc}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    ]
    if token:
        head.append(f"Authorization: Bearer {token}")
    sent = 0
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as connection:
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            while sent < GIB:
                connection.sendall(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent += len(CHUNK)
                connection.setblocking(False)
                try:
                    if connection.recv(1, socket.MSG_PEEK):
                        break  # the service has answered
                except BlockingIOError:
                    pass
                finally:
                    connection.settimeout(30)
            else:
                connection.sendall(b"0\r\n\r\n")  # the whole body went in: end it
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed the connection
        answer = connection.recv(4096).decode("latin-1")
    status = int(answer.split(" ", 2)[1])
    return status, sent


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "owner"])
def test_a_streamed_gigabyte_is_refused_and_memory_stays_flat(
    stack: embedded.EmbeddedStack, token: str | None
) -> None:
    url, pid = stack.service_urls["train"], service_pid(stack, "train")
    before = resident_bytes(pid)
    status, sent = stream_gigabyte(url, "/v1/runs", token)
    assert status == (401 if token is None else 413)
    assert sent < GIB, "the service read the whole gigabyte"
    assert resident_bytes(pid) - before < GROWTH_LIMIT
