"""Ingest restarts: a killed process loses nothing and forgets no seen id."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx

from tests.support.events import events_for
from tests.support.stacks import TOKEN
from tunewire.stack import embedded, ports, processes


def _start_ingest(stack: embedded.EmbeddedStack, name: str) -> tuple[processes.ManagedProcess, str]:
    port = ports.free_port()
    spec = processes.ServiceSpec(
        name=name, module="tunewire.ingest", port=port, env=stack.service_env(port)
    )
    process = processes.start_service(spec, log_dir=stack.log_dir)
    processes.wait_healthy(spec.url + "/healthz", timeout=60, process=process)
    return process, spec.url


def test_a_killed_ingest_remembers_what_it_accepted(
    stack: embedded.EmbeddedStack, objective: dict[str, Any]
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    events = events_for(objective, 10, seed=42)
    first, url = _start_ingest(stack, "ingest-restart-1")
    try:
        response = httpx.post(f"{url}/v1/events", json=events, headers=headers, timeout=30)
        assert response.json()["accepted"] == 10
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.stop()
    assert first.poll() == -signal.SIGKILL

    second, url = _start_ingest(stack, "ingest-restart-2")
    try:
        again = httpx.post(f"{url}/v1/events", json=events, headers=headers, timeout=30)
        assert again.json() == {
            "accepted": 0,
            "duplicates": 10,
            "results": [{"id": e["id"], "status": "duplicate"} for e in events],
        }
    finally:
        second.stop()


def test_sigterm_finishes_and_exits_cleanly(stack: embedded.EmbeddedStack) -> None:
    process, _ = _start_ingest(stack, "ingest-sigterm")
    process.stop(grace=20)
    assert process.poll() == 0
    log = (stack.log_dir / "ingest-sigterm.log").read_text()
    assert "Traceback" not in log
