"""Small helpers for Prometheus metrics on hot paths."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


@functools.cache
def child(metric: M, *labels: str) -> M:
    """A labelled child, looked up once: ``labels()`` costs a lock and a hash per call."""
    return metric.labels(*labels)
