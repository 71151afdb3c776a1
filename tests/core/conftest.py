"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tunewire.stack import broker


@pytest.fixture
def memory_broker(tmp_path: Path) -> Iterator[broker.Broker]:
    """A broker of this test's own, with memory storage: a restart is a new, empty cluster."""
    running = broker.Broker(log_path=tmp_path / "broker.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()
