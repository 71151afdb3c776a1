"""Fixtures for label's in-process tests."""

from __future__ import annotations

import collections.abc

import pytest

from tunewire.core.base import settings
from tunewire.core.bus import producing
from tunewire.stack import embedded


@pytest.fixture
def producer(stack: embedded.EmbeddedStack) -> collections.abc.Iterator[producing.Producer]:
    """A producer on the session's broker, as a label process has one."""
    created = producing.Producer(
        settings.KafkaSettings(bootstrap_servers=stack.bootstrap_servers), client_id="test"
    )
    yield created
    created.close()
