"""Reading the chart's renders: objects by kind and name, a pod's environment with fake
Secrets, the settings a pod would build from it, and the chart tests' values files."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, TypeVar

import pydantic
import pytest
import yaml
from pydantic_settings import BaseSettings

from tunewire.core.base.principals import token_digest

VALUES_DIR = pathlib.Path(__file__).resolve().parent.parent / "chart"
"""Where the chart tests' values files (``values-production.yaml``, ...) live."""
MONITORING = "monitoring.coreos.com/v1"
#: What the fake Secrets hold when settings are built from a pod's environment.
SECRET_VALUES = {
    "principals": json.dumps(
        [
            {"name": "ops", "token_sha256": token_digest("ops-token"), "roles": ["admin"]},
            {
                "name": "support-bot",
                "token_sha256": token_digest("a-long-random-client-token"),
                "roles": ["client"],
                "objectives": ["support-intent"],
                "requests_per_minute": 120,
            },
        ]
    ),
    "username": "tunewire",
    "password": "kafka-password",
}

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_values(name: str) -> dict[str, Any]:
    """A values file of the chart tests, as a dict."""
    values: dict[str, Any] = yaml.safe_load((VALUES_DIR / name).read_text(encoding="utf-8"))
    return values


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    return found


def service_container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The tunewire container of a Deployment: the one named after its component (serve's
    pod also runs vLLM)."""
    component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == component]
    return container


def pod_env(objects: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """The environment a Deployment's tunewire container starts with, its Secrets filled with
    fakes."""
    container = service_container(named(objects, "Deployment", deployment))
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            key = item["valueFrom"]["secretKeyRef"]["key"]
            env[item["name"]] = SECRET_VALUES.get(key, f"secret-{key}")
    return env


def field_exists(model: type[pydantic.BaseModel], env_name: str) -> bool:
    """Whether TUNEWIRE_A__B names the field a.b of the settings (extra keys are ignored)."""
    current: Any = model
    for part in env_name.removeprefix("TUNEWIRE_").lower().split("__"):
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return False
        current = fields[part].annotation
    return True


def settings_from(
    env: dict[str, str], model: type[SettingsT], monkeypatch: pytest.MonkeyPatch
) -> SettingsT:
    """``model`` built as a process with exactly ``env`` (as TUNEWIRE_*) would build it."""
    for name in list(os.environ):
        if name.startswith("TUNEWIRE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return model()
