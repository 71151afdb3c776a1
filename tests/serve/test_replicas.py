"""Registry sync per replica: a new or restarted serve replica catches up by itself, and a
replica driving vLLM (here its test double) loads, routes and unloads through vLLM's
runtime LoRA API, and answers 503 with Retry-After while vLLM is down."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.serve.test_service import ask, serving
from tests.support import adapters, datasets, vllm_double
from tests.support.waiting import eventually
from tunewire.core.base import store
from tunewire.core.state import objectives
from tunewire.stack import embedded, ports, processes


def start_replica(
    stack: embedded.EmbeddedStack, name: str, **env: str
) -> tuple[processes.ManagedProcess, str]:
    port = ports.free_port()
    spec = processes.ServiceSpec(
        name=name,
        module="tunewire.serve",
        port=port,
        env={
            **stack.service_env(port),
            "TUNEWIRE_CONSUMER_GROUP": f"tunewire-serve-{name}-{uuid.uuid4().hex[:6]}",
            **env,
        },
    )
    replica = processes.start_service(spec, log_dir=stack.log_dir)
    processes.wait_healthy(spec.url + "/healthz", timeout=60, process=replica)
    return replica, spec.url


def ready(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/readyz", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def champion(stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore) -> tuple[str, str]:
    objective = f"replica-{uuid.uuid4().hex[:6]}"
    datasets.register(artifacts, datasets.quick_objective(objective))
    cache = pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])
    uri = adapters.write_adapter(
        artifacts, objective=objective, run_id="ft-champ", cache_dir=cache, seed=7
    )
    adapters.approve(artifacts, objective=objective, run_id="ft-champ", adapter_uri=uri)
    return objective, "ft-champ"


def test_a_new_replica_and_a_restarted_one_catch_up(
    stack: embedded.EmbeddedStack, champion: tuple[str, str], tmp_path: pathlib.Path
) -> None:
    objective, run_id = champion
    own_dir = {"TUNEWIRE_SERVE__ADAPTERS_DIR": str(tmp_path / "adapters")}
    replica, url = start_replica(stack, "serve-replica", **own_dir)
    try:
        eventually(lambda: ready(url))
        eventually(lambda: serving(url, objective, run_id))
        answer = ask(url, objective).json()["choices"][0]["message"]["content"]
        assert (
            answer
            == ask(stack.service_urls["serve"], objective).json()["choices"][0]["message"][
                "content"
            ]
        )  # every replica serves the same version
    finally:
        os.killpg(replica.pid, signal.SIGKILL)  # a crash: nothing is handed over
        replica.stop()  # reaps it
    restarted, url = start_replica(stack, "serve-restarted", **own_dir)
    try:
        eventually(lambda: ready(url))
        serving(url, objective, run_id)
    finally:
        restarted.stop()


@pytest.fixture
def vllm() -> Iterator[vllm_double.VllmDouble]:
    with vllm_double.VllmDouble(base_model="base-model", max_loras=4) as double:
        yield double


def test_the_vllm_backend_loads_routes_unloads_and_reports_an_outage(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    champion: tuple[str, str],
    vllm: vllm_double.VllmDouble,
    tmp_path: pathlib.Path,
) -> None:
    objective, run_id = champion
    replica, url = start_replica(
        stack,
        "serve-vllm",
        TUNEWIRE_SERVE__BACKEND="vllm",
        TUNEWIRE_SERVE__BASE_NAME="base-model",
        TUNEWIRE_SERVE__ADAPTERS_DIR=str(tmp_path / "shared"),
        TUNEWIRE_VLLM__BASE_URL=vllm.url,
    )
    try:
        eventually(lambda: ready(url))
        name = f"{objective}@{run_id}"
        assert vllm.loaded[name].startswith(str(tmp_path / "shared"))
        assert (pathlib.Path(vllm.loaded[name]) / "adapter_config.json").is_file()
        served = serving(url, objective, run_id)
        chats = [r for r in vllm.requests if r.path == "/v1/chat/completions"]
        assert chats[-1].body["model"] == name  # vLLM was asked for the adapter by name
        assert name in json.dumps(served)

        objectives.ObjectiveCatalog(artifacts).retire(objective, actor="test")
        eventually(lambda: _unloaded(vllm, name))
        assert ask(url, objective).status_code == 404

        vllm.stop()
        down = ask(url, "base-model")
        assert down.status_code == 503, down.text
        assert int(down.headers["Retry-After"]) >= 1
        assert down.json()["error"]["type"] == "service_unavailable"
    finally:
        replica.stop()


def _unloaded(vllm: vllm_double.VllmDouble, name: str) -> None:
    assert name not in vllm.loaded
    assert any(r.path == "/v1/unload_lora_adapter" for r in vllm.requests)
