"""Renders of the chart shared by the chart tests (each takes a few milliseconds)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from tests.chart import render

HERE = pathlib.Path(__file__).parent
MONITORING = "monitoring.coreos.com/v1"


def load_values(name: str) -> dict[str, Any]:
    """A values file next to this one, as a dict."""
    values: dict[str, Any] = yaml.safe_load((HERE / name).read_text(encoding="utf-8"))
    return values


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


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found
