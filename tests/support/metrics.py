"""Reading a service's Prometheus ``/metrics`` as an SRE's scrape would."""

from __future__ import annotations

import httpx


def counter(url: str, name: str) -> float:
    """The sum of every sample whose line starts with ``name`` (a metric, or a metric with
    the start of its labels, e.g. ``tunewire_x_total{objective="o"``)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
