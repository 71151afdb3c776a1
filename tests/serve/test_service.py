"""The serve service on the embedded stack (in-process backend): approvals become served
aliases, rollback moves them at once, a broken adapter is never routed to, and every
refusal is an OpenAI-style error."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any

import httpx
import pytest

from tests.support import adapters, datasets, kafka_io
from tests.support.stacks import TOKENS
from tests.support.waiting import eventually
from tunewire.contracts.v1 import deployments_pb2
from tunewire.core.base import store
from tunewire.core.bus import topics
from tunewire.core.state import objectives
from tunewire.stack import embedded

QUESTION = [{"role": "user", "content": "My parcel never arrived, where is it?"}]


def ask(url: str, model: str, *, who: str = "app", **extra: Any) -> httpx.Response:
    """A chat request; greedy unless ``extra`` says otherwise, so answers are comparable."""
    extra.setdefault("temperature", 0)
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {TOKENS[who]}"},
        json={"model": model, "messages": QUESTION, "max_tokens": 8, **extra},
        timeout=60,
    )


def label_scores(url: str, model: str) -> dict[str, float]:
    """The task endpoint's scores of one sample ticket by ``model`` (an alias or a version)."""
    ticket = {
        "ticket_id": "T-1",
        "channel": "email",
        "subject": "Late",
        "body": QUESTION[0]["content"],
    }
    objective = model.partition("@")[0]
    response = httpx.post(
        f"{url}/v1/objectives/{objective}/predict",
        headers={"Authorization": f"Bearer {TOKENS['app']}"},
        json={"data": ticket, "model": model},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    scores: dict[str, float] = response.json()["scores"]
    return scores


def deployment_events(stack: embedded.EmbeddedStack, objective: str, count: int) -> list[Any]:
    reader = kafka_io.TopicReader(stack.bootstrap_servers, topics.DEPLOYMENTS)
    found: list[deployments_pb2.DeploymentChange] = []

    def enough(records: list[Any]) -> bool:
        found[:] = [
            change
            for change in (deployments_pb2.DeploymentChange.FromString(r.value) for r in records)
            if change.objective == objective
        ]
        return len({(c.kind, c.to_run_id) for c in found}) >= count

    try:
        reader.read_until(enough, timeout_s=30)
    finally:
        reader.close()
    return found


@pytest.fixture
def objective(artifacts: store.ArtifactStore) -> str:
    name = f"serve-{uuid.uuid4().hex[:6]}"
    datasets.register(artifacts, datasets.quick_objective(name))
    return name


@pytest.fixture
def cache(stack: embedded.EmbeddedStack) -> pathlib.Path:
    return pathlib.Path(stack.service_env(0)["TUNEWIRE_MODEL_CACHE"])


def approved_and_served(
    artifacts: store.ArtifactStore,
    url: str,
    objective: str,
    run_id: str,
    *,
    cache: pathlib.Path,
    seed: int,
) -> dict[str, Any]:
    """Write an adapter, approve it as the evaluator would, and wait until the alias
    answers with it; that answer."""
    uri = adapters.write_adapter(
        artifacts, objective=objective, run_id=run_id, cache_dir=cache, seed=seed
    )
    adapters.approve(artifacts, objective=objective, run_id=run_id, adapter_uri=uri)
    return eventually(lambda: serving(url, objective, run_id))


def serving(url: str, objective: str, run_id: str) -> dict[str, Any]:
    response = ask(url, objective)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == f"{objective}@{run_id}"
    return response.json()


def test_approval_rollback_and_a_broken_adapter(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    serve_api: httpx.Client,
    objective: str,
    cache: pathlib.Path,
) -> None:
    url = stack.service_urls["serve"]
    first, second, broken = "ft-first", "ft-second", "ft-broken"
    for run_id, seed in ((first, 1), (second, 2)):
        approved_and_served(artifacts, url, objective, run_id, cache=cache, seed=seed)
    # Another adapter answers: its label scores differ (answers are held to the labels, so
    # two adapters may well give the same one).
    assert label_scores(url, objective) != label_scores(url, f"{objective}@{first}")
    base = ask(url, "base").json()
    assert base["model"] == "base"
    models = {m["id"] for m in httpx.get(url + "/v1/models", headers=_app()).json()["data"]}
    assert {objective, f"{objective}@{second}", "base"} <= models

    rolled = serve_api.post(f"/v1/deployments/{objective}/rollback", json={"reason": "bad answers"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["serving"] == first
    serving(url, objective, first)  # at once: no waiting

    uri = adapters.write_adapter(
        artifacts, objective=objective, run_id=broken, cache_dir=cache, seed=3, corrupt=True
    )
    adapters.approve(artifacts, objective=objective, run_id=broken, adapter_uri=uri)
    events = deployment_events(stack, objective, 4)
    kinds = {(e.kind, e.to_run_id) for e in events}
    assert (deployments_pb2.DEPLOYMENT_CHANGE_KIND_PROMOTED, first) in kinds
    assert (deployments_pb2.DEPLOYMENT_CHANGE_KIND_PROMOTED, second) in kinds
    assert (deployments_pb2.DEPLOYMENT_CHANGE_KIND_ROLLED_BACK, first) in kinds
    failed = [e for e in events if e.kind == deployments_pb2.DEPLOYMENT_CHANGE_KIND_FAILED]
    assert failed and failed[0].to_run_id == broken and "failed to load" in failed[0].reason
    serving(url, objective, first)  # the alias stayed
    pinned = ask(url, f"{objective}@{broken}")
    assert pinned.status_code == 404
    assert "failed to load" in pinned.json()["error"]["message"]
    status = serve_api.get("/v1/deployments").json()
    assert f"{objective}@{broken}" in status["failed"]
    assert httpx.get(url + "/readyz").status_code == 200  # refused for good, not pending


def test_retiring_an_objective_unloads_its_adapters(
    stack: embedded.EmbeddedStack,
    artifacts: store.ArtifactStore,
    serve_api: httpx.Client,
    objective: str,
    cache: pathlib.Path,
) -> None:
    url = stack.service_urls["serve"]
    approved_and_served(artifacts, url, objective, "ft-only", cache=cache, seed=4)

    objectives.ObjectiveCatalog(artifacts).retire(objective, actor="test")

    def gone() -> None:
        assert ask(url, objective).status_code == 404
        assert f"{objective}@ft-only" not in serve_api.get("/v1/deployments").json()["loaded"]

    eventually(gone)
    kinds = [e.kind for e in deployment_events(stack, objective, 2)]
    assert deployments_pb2.DEPLOYMENT_CHANGE_KIND_RETIRED in kinds


def test_a_registry_entry_outside_the_adapters_prefix_is_never_loaded(
    artifacts: store.ArtifactStore, serve_api: httpx.Client, objective: str, cache: pathlib.Path
) -> None:
    """Whatever got into the registry, serve syncs only from where the trainer writes
    adapters, and never outside its adapters volume."""
    url = str(serve_api.base_url).rstrip("/")
    good = adapters.write_adapter(
        artifacts, objective=objective, run_id="ft-good", cache_dir=cache, seed=6
    )
    adapters.approve(artifacts, objective=objective, run_id="ft-good", adapter_uri=good)
    eventually(lambda: serving(url, objective, "ft-good"))
    elsewhere = good.replace("/ft-good/", "/ft-other/")  # another run's files
    adapters.approve(artifacts, objective=objective, run_id="ft-moved", adapter_uri=elsewhere)

    def refused() -> None:
        failed = serve_api.get("/v1/deployments").json()["failed"]
        assert "adapters are only loaded from" in failed.get(f"{objective}@ft-moved", "")

    eventually(refused)
    serving(url, objective, "ft-good")  # the alias stayed
    assert not (cache.parent / "adapters" / f"{objective}@ft-moved").exists()


def test_every_refusal_is_an_openai_error(stack: embedded.EmbeddedStack) -> None:
    url = stack.service_urls["serve"]

    def refused(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error

    assert "does not exist" in refused(ask(url, "no-such-model"), 404)["message"]
    long = [{"role": "user", "content": "x" * 2001}]
    assert refused(ask(url, "base", messages=long), 400)["param"] == "messages"
    assert refused(ask(url, "base", max_tokens=33), 400)["param"] == "max_tokens"
    malformed = httpx.post(
        url + "/v1/chat/completions", headers=_app(), content=b"{not json", timeout=30
    )
    refused(malformed, 422)
    refused(ask(url, "base", messages="hello"), 422)
    anonymous = httpx.post(url + "/v1/chat/completions", json={"model": "base"}, timeout=30)
    assert refused(anonymous, 401)["type"] == "authentication_error"
    bad = httpx.post(
        url + "/v1/completions",
        headers={"Authorization": "Bearer nope"},
        json={"model": "base", "prompt": "hi"},
        timeout=30,
    )
    refused(bad, 401)
    assert ask(url, "base", who="scoped").status_code == 200  # the base is open to all
    statuses = [ask(url, "base", who="slow").status_code for _ in range(3)]
    assert statuses[:2] == [200, 200]
    limited = ask(url, "base", who="slow")
    refused(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1


def test_streaming_answers_match_and_completions_work(stack: embedded.EmbeddedStack) -> None:
    url = stack.service_urls["serve"]
    whole = ask(url, "base", temperature=0).json()["choices"][0]["message"]["content"]
    parts: list[str] = []
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        headers=_app(),
        json={
            "model": "base",
            "messages": QUESTION,
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
        },
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        delta = json.loads(line[len("data: ") :])["choices"][0].get("delta", {})
        parts.append(delta.get("content") or "")
    assert "".join(parts) == whole
    completion = httpx.post(
        url + "/v1/completions",
        headers=_app(),
        json={"model": "base", "prompt": "Refund please", "max_tokens": 4},
        timeout=60,
    )
    assert completion.status_code == 200, completion.text
    assert completion.json()["object"] == "text_completion"
    assert completion.json()["usage"]["completion_tokens"] <= 4


def _app() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS['app']}"}
