"""The vLLM backend against the vLLM double over HTTP: load, list, route (streaming too),
unload, and every failure a reconciler or a client can meet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http import HTTPStatus
from typing import Any, TypeVar

import pytest

from tests.support import vllm_double
from tunewire.core.base import errors
from tunewire.serve import backend, vllm_server

T = TypeVar("T")
QUESTION = {"messages": [{"role": "user", "content": "where is my parcel"}], "max_tokens": 16}
PROMPT = {"prompt": "Ticket: my parcel is late. Intent:", "max_tokens": 16}


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=30)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def connected(
    double: vllm_double.VllmDouble, **overrides: Any
) -> AsyncIterator[vllm_server.VllmBackend]:
    options: dict[str, Any] = {
        "base_url": double.url,
        "base_model": double.base_model,
        "max_adapters": 2,
        "timeout_s": 10,
    }
    client = vllm_server.VllmBackend(**(options | overrides))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def double() -> Iterator[vllm_double.VllmDouble]:
    with vllm_double.VllmDouble(max_loras=2) as server:
        yield server


def write_adapter(directory: pathlib.Path, *, rank: int = 8, weights: bool = True) -> pathlib.Path:
    directory.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank}
    (directory / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (directory / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return directory


def events(chunks: list[bytes]) -> list[Any]:
    """The data of each relayed event, after checking each chunk is one whole event."""
    out: list[Any] = []
    for chunk in chunks:
        assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n"), chunk
        data = chunk[len(b"data: ") : -2]
        out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def test_load_route_stream_and_unload(
    double: vllm_double.VllmDouble, tmp_path: pathlib.Path
) -> None:
    name = "support-intent@run-1"
    path = write_adapter(tmp_path / "support-intent" / "run-1")

    async def scenario() -> None:
        async with connected(double) as vllm:
            await vllm.check()
            assert await vllm.loaded_adapters() == set()

            await vllm.load_adapter(name, path)
            assert double.loaded == {name: str(path)}
            loads = [r for r in double.requests if r.path == "/v1/load_lora_adapter"]
            assert [r.body for r in loads] == [{"lora_name": name, "lora_path": str(path)}]
            assert await vllm.loaded_adapters() == {name}

            chat = await vllm.complete("chat/completions", QUESTION, target=name)
            assert chat["model"] == name
            assert chat["choices"][0]["message"]["content"] == f"answer from {name}"
            assert chat["usage"] == {
                "prompt_tokens": 4,
                "completion_tokens": 3,
                "total_tokens": 7,
                "prompt_tokens_details": None,
            }
            text = await vllm.complete("completions", PROMPT, target=double.base_model)
            assert text["choices"][0]["text"] == f"answer from {double.base_model}"
            sent = [r.body for r in double.requests if r.path.endswith("completions")]
            assert sent == [
                QUESTION | {"model": name, "stream": False},
                PROMPT | {"model": double.base_model, "stream": False},
            ]

            await vllm.unload_adapter(name)
            assert double.loaded == {}
            assert await vllm.loaded_adapters() == set()
            with pytest.raises(backend.UpstreamError) as refused:
                await vllm.complete("chat/completions", QUESTION, target=name)
            assert refused.value.status == 404

    run(scenario)


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions"])
def test_stream_relays_each_event_as_it_arrives(
    double: vllm_double.VllmDouble, tmp_path: pathlib.Path, endpoint: backend.Endpoint
) -> None:
    name = "support-intent@run-2"
    path = write_adapter(tmp_path / "adapter")
    body = (QUESTION if endpoint == "chat/completions" else PROMPT) | {
        "stream_options": {"include_usage": True}
    }

    async def scenario() -> list[bytes]:
        async with connected(double) as vllm:
            await vllm.load_adapter(name, path)
            gate = double.hold_streams()
            stream = vllm.stream(endpoint, body, target=name)
            # The double holds the rest of the stream until the gate opens: a backend that
            # buffered the response would not get its first event in time.
            first = await asyncio.wait_for(anext(stream), timeout=5)
            assert not gate.is_set()
            gate.set()
            return [first] + [chunk async for chunk in stream]

    chunks = run(scenario)
    data = events(chunks)
    assert data[-1] == "[DONE]"
    assert data[-2]["usage"]["completion_tokens"] == 3
    parts = data[:-2]
    assert {part["model"] for part in parts} == {name}
    if endpoint == "chat/completions":
        assert parts[0]["choices"][0]["delta"]["role"] == "assistant"
        said = "".join(p["choices"][0]["delta"].get("content", "") for p in parts)
    else:
        said = "".join(p["choices"][0]["text"] for p in parts)
    assert said == f"answer from {name}"
    assert parts[-1]["choices"][0]["finish_reason"] == "stop"
    assert double.requests[-1].body == body | {"model": name, "stream": True}


def test_a_stream_that_stalls_past_the_timeout_is_unavailable(
    double: vllm_double.VllmDouble,
) -> None:
    async def scenario() -> None:
        async with connected(double, timeout_s=0.5) as vllm:
            gate = double.hold_streams()
            stream = vllm.stream("chat/completions", QUESTION, target=double.base_model)
            try:
                await anext(stream)
                with pytest.raises(errors.Unavailable, match="did not answer in time"):
                    await anext(stream)
            finally:
                gate.set()

    run(scenario)


def test_loading_a_loaded_adapter_again_succeeds(
    double: vllm_double.VllmDouble, tmp_path: pathlib.Path
) -> None:
    path = write_adapter(tmp_path / "adapter")

    async def scenario() -> None:
        async with connected(double) as vllm:
            await vllm.load_adapter("a@1", path)
            await vllm.load_adapter("a@1", path)
            assert await vllm.loaded_adapters() == {"a@1"}

    run(scenario)
    assert len([r for r in double.requests if r.path == "/v1/load_lora_adapter"]) == 2


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: d / "never-synced", "No adapter found for"),
        (lambda d: write_adapter(d / "no-weights", weights=False), "doesn't contain tensors"),
        (lambda d: write_adapter(d / "rank-64", rank=64), "greater than max_lora_rank 16"),
    ],
    ids=["missing", "no-weights", "rank-too-high"],
)
def test_an_adapter_that_does_not_load_is_refused_with_vllms_reason(
    double: vllm_double.VllmDouble,
    tmp_path: pathlib.Path,
    make: Callable[[pathlib.Path], pathlib.Path],
    said: str,
) -> None:
    path = make(tmp_path)

    async def scenario() -> None:
        async with connected(double) as vllm:
            with pytest.raises(backend.AdapterLoadError, match=said) as refused:
                await vllm.load_adapter("a@1", path)
            assert "'a@1'" in refused.value.message
            assert await vllm.loaded_adapters() == set()

    run(scenario)


def test_a_500_from_a_healthy_server_blames_the_adapter(tmp_path: pathlib.Path) -> None:
    path = write_adapter(tmp_path / "rank-64", rank=64)

    async def scenario() -> None:
        with vllm_double.VllmDouble(
            adapter_error_status=HTTPStatus.INTERNAL_SERVER_ERROR
        ) as server:
            async with connected(server) as vllm:
                with pytest.raises(backend.AdapterLoadError, match="max_lora_rank"):
                    await vllm.load_adapter("a@1", path)

    run(scenario)


def test_unloading_an_adapter_not_loaded_is_fine(double: vllm_double.VllmDouble) -> None:
    async def scenario() -> None:
        async with connected(double) as vllm:
            await vllm.unload_adapter("never@loaded")

    run(scenario)
    assert double.requests[-1].body == {"lora_name": "never@loaded"}


def test_vllm_refusals_reach_the_client_as_vllm_wrote_them(
    double: vllm_double.VllmDouble,
) -> None:
    async def scenario() -> list[backend.UpstreamError]:
        refusals = []
        async with connected(double) as vllm:
            for call in (
                lambda: vllm.complete("chat/completions", QUESTION, target="nope@1"),
                lambda: anext(vllm.stream("chat/completions", QUESTION, target="nope@1")),
                lambda: vllm.complete("chat/completions", {"max_tokens": 4}, target="base-model"),
            ):
                with pytest.raises(backend.UpstreamError) as refused:
                    await call()
                refusals.append(refused.value)
        return refusals

    unknown, unknown_streamed, malformed = run(scenario)
    expected = {
        "error": {
            "message": "The model `nope@1` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    assert (unknown.status, unknown.body) == (404, expected)
    assert (unknown_streamed.status, unknown_streamed.body) == (404, expected)
    assert malformed.status == 400
    assert "messages" in malformed.body["error"]["message"]


def test_a_server_that_is_down_is_unavailable_and_forgets_its_adapters(
    double: vllm_double.VllmDouble, tmp_path: pathlib.Path
) -> None:
    path = write_adapter(tmp_path / "adapter")

    async def scenario() -> None:
        async with connected(double) as vllm:
            await vllm.load_adapter("a@1", path)
            double.stop()
            for call in (
                vllm.check,
                lambda: vllm.load_adapter("a@1", path),
                lambda: vllm.unload_adapter("a@1"),
                vllm.loaded_adapters,
                lambda: vllm.complete("completions", PROMPT, target="a@1"),
                lambda: anext(vllm.stream("completions", PROMPT, target="a@1")),
            ):
                with pytest.raises(errors.Unavailable, match="unreachable"):
                    await call()
            double.start()
            await vllm.check()
            assert await vllm.loaded_adapters() == set()

    run(scenario)


def test_a_dead_engine_is_unavailable(
    double: vllm_double.VllmDouble, tmp_path: pathlib.Path
) -> None:
    path = write_adapter(tmp_path / "adapter")

    async def scenario() -> None:
        async with connected(double) as vllm:
            await vllm.check()
            double.kill_engine()
            with pytest.raises(errors.Unavailable, match="not healthy"):
                await vllm.check()
            with pytest.raises(errors.Unavailable, match="not healthy"):
                await vllm.load_adapter("a@1", path)
            with pytest.raises(errors.Unavailable, match="EngineCore"):
                await vllm.complete("chat/completions", QUESTION, target="base-model")

    run(scenario)


def test_runtime_lora_updating_disabled_says_how_to_enable_it(tmp_path: pathlib.Path) -> None:
    path = write_adapter(tmp_path / "adapter")

    async def scenario() -> None:
        with vllm_double.VllmDouble(runtime_lora_updating=False) as server:
            async with connected(server) as vllm:
                await vllm.check()
                calls: list[Callable[[], Awaitable[None]]] = [
                    lambda: vllm.load_adapter("a@1", path),
                    lambda: vllm.unload_adapter("a@1"),
                ]
                for call in calls:
                    with pytest.raises(
                        errors.Misconfigured, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
                    ):
                        await call()

    run(scenario)


def test_the_api_key_is_sent_and_a_wrong_one_is_a_misconfiguration(
    tmp_path: pathlib.Path,
) -> None:
    path = write_adapter(tmp_path / "adapter")

    async def scenario() -> vllm_double.VllmDouble:
        with vllm_double.VllmDouble(api_key="vllm-key") as server:
            async with connected(server, api_key="vllm-key") as vllm:
                await vllm.check()
                await vllm.load_adapter("a@1", path)
                await vllm.complete("completions", PROMPT, target="a@1")
            async with connected(server, api_key="wrong") as vllm:
                with pytest.raises(errors.Misconfigured, match="--api-key"):
                    await vllm.check()
                with pytest.raises(errors.Misconfigured, match="--api-key"):
                    await vllm.complete("completions", PROMPT, target="a@1")
            return server

    server = run(scenario)
    keyed = [r for r in server.requests if r.path.startswith("/v1")][:3]
    assert {r.headers["authorization"] for r in keyed} == {"Bearer vllm-key"}


def test_a_server_with_another_base_model_is_a_misconfiguration(
    double: vllm_double.VllmDouble,
) -> None:
    async def scenario() -> None:
        async with connected(double, base_model="qwen2.5-0.5b") as vllm:
            with pytest.raises(errors.Misconfigured, match=r"'qwen2\.5-0\.5b'"):
                await vllm.check()

    run(scenario)


def test_a_base_url_with_the_api_prefix_is_a_misconfiguration(
    double: vllm_double.VllmDouble,
) -> None:
    async def scenario() -> None:
        async with connected(double, base_url=double.url + "/v1") as vllm:
            with pytest.raises(errors.Misconfigured, match="without /v1"):
                await vllm.check()
            with pytest.raises(errors.Misconfigured, match="without /v1"):
                await vllm.complete("completions", PROMPT, target=double.base_model)

    run(scenario)


def test_vllm_evicts_beyond_its_cache_instead_of_refusing(tmp_path: pathlib.Path) -> None:
    """Why the reconciler keeps to ``max_adapters``: vLLM itself never says no."""
    first = write_adapter(tmp_path / "first")
    second = write_adapter(tmp_path / "second")

    async def scenario() -> vllm_double.VllmDouble:
        with vllm_double.VllmDouble(max_loras=1) as server:
            async with connected(server, max_adapters=1) as vllm:
                assert vllm.max_adapters == 1
                await vllm.load_adapter("a@1", first)
                await vllm.load_adapter("b@1", second)
                assert await vllm.loaded_adapters() == {"a@1", "b@1"}
                answer = await vllm.complete("completions", PROMPT, target="a@1")
                assert answer["choices"][0]["text"] == "answer from a@1"
            return server

    server = run(scenario)
    assert server.evictions == ["a@1", "b@1"]
    assert server.reloads == ["a@1"]
    assert server.cpu_cache == ["a@1"]
