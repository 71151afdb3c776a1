"""Renders of the chart shared by the chart tests (each takes a few milliseconds)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart import render
from tests.support.chart import MONITORING, load_values


@pytest.fixture(scope="session")
def production_values() -> dict[str, Any]:
    return load_values("values-production.yaml")


@pytest.fixture(scope="session")
def default_objects() -> list[dict[str, Any]]:
    """The default values, on a cluster without the Prometheus Operator."""
    return render.objects(render.render())


@pytest.fixture(scope="session")
def production_objects(production_values: dict[str, Any]) -> list[dict[str, Any]]:
    """The production-like values, on a cluster with the Prometheus Operator's API."""
    return render.objects(render.render(production_values, api_versions=[MONITORING]))


@pytest.fixture(scope="session", params=["default", "production"])
def rendered(
    request: pytest.FixtureRequest,
    default_objects: list[dict[str, Any]],
    production_objects: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Both renders in turn."""
    chosen: list[dict[str, Any]] = (
        default_objects if request.param == "default" else production_objects
    )
    return chosen
