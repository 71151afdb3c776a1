"""Waiting for a service to get somewhere, as a user polling its API would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def poll_json(
    client: httpx.Client,
    path: str,
    done: Callable[[Any], object],
    *,
    timeout_s: float = 240,
    interval_s: float = 0.3,
) -> Any:
    """GET ``path`` until it answers 200 with a body ``done`` accepts; that body.

    Fails with the last body seen, so a timeout says where things got stuck.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        response = client.get(path)
        if response.status_code == 200:
            last = response.json()
            if done(last):
                return last
        time.sleep(interval_s)
    raise AssertionError(f"{path} never got there in {timeout_s:.0f}s; last seen {last}")
