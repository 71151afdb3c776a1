"""What the serve tests share: an objective with an approved champion on the stack's serve,
and a serve replica driving vLLM's HTTP double (started once for the package)."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.test_replicas import ready, start_replica
from tests.support import adapters, datasets, stacks, vllm_double
from tests.support.waiting import eventually
from tunewire.core.base import store
from tunewire.core.state import objectives
from tunewire.stack import embedded


@pytest.fixture(scope="package")
def bucket(stack: embedded.EmbeddedStack) -> Iterator[store.ArtifactStore]:
    with pytest.MonkeyPatch.context() as patch:
        yield stacks.artifact_store(stack, patch)


@pytest.fixture(scope="package")
def objective(
    stack: embedded.EmbeddedStack, bucket: store.ArtifactStore
) -> objectives.ObjectiveSpec:
    """An objective with an approved champion, registered as evaluate registered versions
    before it recorded their contracts (serve derives it from the objective version)."""
    artifacts = bucket
    spec = datasets.quick_objective(f"sdk-{uuid.uuid4().hex[:6]}")
    datasets.register(artifacts, spec)
    cache = pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])
    uri = adapters.write_adapter(
        artifacts, objective=spec.name, run_id="ft-sdk", cache_dir=cache, seed=5
    )
    adapters.approve(artifacts, objective=spec.name, run_id="ft-sdk", adapter_uri=uri)
    return spec


EXTRACTION: dict[str, Any] = {
    "task": "extraction",
    "source": {"event_type": "maintenance.logged", "text": "{log}", "id_field": "entry_id"},
    "labels": [],
    "labelling": {},
    "output": {
        "fields": {
            "component": {"enum": ["pump", "belt", "fan"], "source": "component"},
            "urgent": {"type": "boolean", "source": "urgent"},
        }
    },
}


@pytest.fixture(scope="package")
def extraction(
    stack: embedded.EmbeddedStack, bucket: store.ArtifactStore
) -> objectives.ObjectiveSpec:
    """An extraction objective with an approved champion."""
    spec = datasets.quick_objective(f"ext-{uuid.uuid4().hex[:6]}", **EXTRACTION)
    datasets.register(bucket, spec)
    cache = pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])
    uri = adapters.write_adapter(
        bucket, objective=spec.name, run_id="ft-ext", cache_dir=cache, seed=9
    )
    adapters.approve(bucket, objective=spec.name, run_id="ft-ext", adapter_uri=uri)
    return spec


@pytest.fixture(scope="package")
def vllm(
    stack: embedded.EmbeddedStack,
    objective: objectives.ObjectiveSpec,
    extraction: objectives.ObjectiveSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[vllm_double.VllmDouble, str]]:
    """The vLLM double and a serve replica driving it."""
    with vllm_double.VllmDouble(base_model="base-model", max_loras=4) as double:
        replica, url = start_replica(
            stack,
            "serve-sdk",
            TUNEWIRE_SERVE__BACKEND="vllm",
            TUNEWIRE_SERVE__BASE_NAME="base-model",
            TUNEWIRE_SERVE__ADAPTERS_DIR=str(tmp_path_factory.mktemp("adapters")),
            TUNEWIRE_VLLM__BASE_URL=double.url,
        )
        try:
            eventually(lambda: ready(url))
            yield double, url
        finally:
            replica.stop()
