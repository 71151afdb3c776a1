"""Waiting for a service to get somewhere: the one polling helper every test uses.

Tests never sleep a fixed time: they ask again until what they expect holds, and a timeout
fails with the last thing seen, so it says where things got stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def eventually(
    check: Callable[[], T],
    *,
    ready: Callable[[T], object] = lambda _: True,
    timeout_s: float = 60,
    interval_s: float = 0.2,
    what: str = "the check",
) -> T:
    """Call ``check`` until it returns, without an ``AssertionError``, a result ``ready``
    accepts; that result.

    At the deadline the last ``AssertionError`` is raised again, or one naming the last
    result ``ready`` refused.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        else:
            if ready(result):
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{what} never got there in {timeout_s:.0f}s; last seen {result!r}"
                )
        time.sleep(interval_s)


def poll_json(
    client: httpx.Client,
    path: str,
    done: Callable[[Any], object],
    *,
    timeout_s: float = 240,
    interval_s: float = 0.3,
) -> Any:
    """GET ``path`` until it answers 200 with a body ``done`` accepts; that body."""

    def body() -> Any:
        response = client.get(path)
        return response.json() if response.status_code == 200 else None

    return eventually(
        body,
        ready=lambda found: found is not None and done(found),
        timeout_s=timeout_s,
        interval_s=interval_s,
        what=path,
    )
