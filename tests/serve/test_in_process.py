"""The in-process backend: the built-in model with LoRA adapters saved on disk, loaded,
routed per request (together in one batch too), streamed, refused, and measured."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import peft
import pytest

from tests.serve import adapters
from tunewire.core.base import errors
from tunewire.serve import backend, in_process
from tunewire.workloads import data, models, scoring

T = TypeVar("T")
BASE = "base"
ALPHA = "support-intent@ft-alpha"
BETA = "support-intent@ft-beta"
SYSTEM = {"role": "system", "content": "Classify the user's text."}


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout=30)

    return asyncio.run(bounded())


def chat(text: str, **fields: Any) -> dict[str, Any]:
    """A greedy chat request as a labelled example's prompt looks."""
    return {
        "messages": [SYSTEM, {"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 16,
        **fields,
    }


def content(reply: dict[str, Any]) -> str:
    return str(reply["choices"][0]["message"]["content"])


async def events(stream: AsyncIterator[bytes]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The JSON chunks of a stream, and the raw events (to check the framing)."""
    raw = [event async for event in stream]
    chunks = []
    for event in raw:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n"), event
        if event != b"data: [DONE]\n\n":
            chunks.append(json.loads(event[len(b"data: ") : -2]))
    return chunks, raw


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    cache = tmp_path_factory.mktemp("models")
    models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=cache)
    return cache


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, model_cache: pathlib.Path
) -> dict[str, pathlib.Path]:
    """Two adapters that answer differently, by served name."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        ALPHA: adapters.make_adapter(root / "alpha", cache_dir=model_cache, seed=1),
        BETA: adapters.make_adapter(root / "beta", cache_dir=model_cache, seed=2),
    }


@pytest.fixture
def server(model_cache: pathlib.Path) -> Iterator[in_process.InProcessBackend]:
    served = in_process.InProcessBackend(
        base_model=models.TINY_LLAMA,
        artifacts=None,
        cache_dir=model_cache,
        served_base_name=BASE,
        max_adapters=12,
    )
    yield served
    asyncio.run(served.close())


def alone(model_cache: pathlib.Path, adapter: pathlib.Path | None, request: dict[str, Any]) -> str:
    """The evaluator's greedy answer (:func:`scoring.generate`) with only this adapter."""
    loaded = models.load(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache)
    model: Any = loaded.model
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, str(adapter))
    [answer] = scoring.generate(
        model,
        loaded.tokenizer,
        [{"messages": request["messages"]}],
        max_new_tokens=request["max_tokens"],
        max_seq_len=512,
    )
    return answer


def test_not_ready_until_the_base_model_is_loaded(server: in_process.InProcessBackend) -> None:
    async def scenario() -> None:
        with pytest.raises(errors.Unavailable, match="not loaded yet"):
            await server.check()
        await server.start()
        await server.check()
        assert await server.loaded_adapters() == set()
        assert server.base_model == BASE
        reply = await server.complete("chat/completions", chat("Where is my parcel?"), target=BASE)
        assert content(reply)
        await server.close()
        with pytest.raises(errors.Unavailable, match="closed"):
            await server.check()
        with pytest.raises(errors.Unavailable):
            await server.complete("chat/completions", chat("Where is my parcel?"), target=BASE)

    run(scenario)


def test_a_base_model_that_cannot_load_leaves_the_server_unavailable(
    model_cache: pathlib.Path,
) -> None:
    served = in_process.InProcessBackend(
        base_model="builtin://no-such-model", artifacts=None, cache_dir=model_cache
    )

    async def scenario() -> None:
        with pytest.raises(errors.Unavailable, match="builtin://tiny-llama"):
            await served.complete("chat/completions", chat("hello"), target=served.base_model)
        with pytest.raises(errors.Unavailable, match="there is no built-in model"):
            await served.check()
        await served.close()

    run(scenario)


def test_adapters_load_once_and_unload_back_to_the_bare_base(
    server: in_process.InProcessBackend, saved: dict[str, pathlib.Path]
) -> None:
    async def scenario() -> None:
        await server.start()
        bare = in_process.resident_bytes(server)
        before = content(await server.complete("chat/completions", chat("refund"), target=BASE))
        await server.load_adapter(ALPHA, saved[ALPHA])
        one = in_process.resident_bytes(server)
        await server.load_adapter(ALPHA, saved[ALPHA])
        assert in_process.resident_bytes(server) == one > bare
        await server.load_adapter(BETA, saved[BETA])
        assert await server.loaded_adapters() == {ALPHA, BETA}
        await server.unload_adapter(ALPHA)
        await server.unload_adapter(ALPHA)
        assert await server.loaded_adapters() == {BETA}
        with pytest.raises(backend.UpstreamError) as gone:
            await server.complete("chat/completions", chat("refund"), target=ALPHA)
        assert gone.value.status == 404
        await server.unload_adapter(BETA)
        assert await server.loaded_adapters() == set()
        assert in_process.resident_bytes(server) == bare
        after = content(await server.complete("chat/completions", chat("refund"), target=BASE))
        assert after == before

    run(scenario)


BROKEN = {
    "corrupt": (adapters.corrupt_copy, "SafetensorError"),
    "mismatched": (adapters.mismatched_copy, "size mismatch"),
    "foreign": (adapters.foreign_copy, "c_attn"),
    "incomplete": (adapters.incomplete_copy, "weights missing"),
    "missing": (lambda source, target: target, "adapter_config.json does not exist"),
}


@pytest.mark.parametrize("already", [[], [ALPHA]], ids=["first", "beside-another"])
@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_adapter_is_refused_and_changes_nothing(
    server: in_process.InProcessBackend,
    saved: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    kind: str,
    already: list[str],
) -> None:
    make, cause = BROKEN[kind]
    broken = make(saved[BETA], tmp_path / "broken")

    async def scenario() -> None:
        for name in already:
            await server.load_adapter(name, saved[name])
        targets = [BASE, *already]
        answers = {
            t: await server.complete("chat/completions", chat("late"), target=t) for t in targets
        }
        size = in_process.resident_bytes(server)
        with pytest.raises(backend.AdapterLoadError) as refused:
            await server.load_adapter("support-intent@ft-broken", broken)
        assert str(broken) in refused.value.message and cause in refused.value.message
        assert await server.loaded_adapters() == set(already)
        assert in_process.resident_bytes(server) == size
        for target, answer in answers.items():
            again = await server.complete("chat/completions", chat("late"), target=target)
            assert content(again) == content(answer)
        # Nothing of the failed attempt is left to get in the way of the next load.
        await server.load_adapter(BETA, saved[BETA])
        assert await server.loaded_adapters() == {*already, BETA}

    run(scenario)


def test_each_request_is_answered_by_the_adapter_it_names(
    server: in_process.InProcessBackend, saved: dict[str, pathlib.Path], model_cache: pathlib.Path
) -> None:
    request = chat("My parcel never arrived, where is it?")

    async def scenario() -> dict[str, str]:
        await server.load_adapter(ALPHA, saved[ALPHA])
        await server.load_adapter(BETA, saved[BETA])
        return {
            t: content(await server.complete("chat/completions", dict(request), target=t))
            for t in (BASE, ALPHA, BETA)
        }

    answers = run(scenario)
    assert answers[BASE].strip() == alone(model_cache, None, request)
    assert answers[ALPHA].strip() == alone(model_cache, saved[ALPHA], request)
    assert answers[BETA].strip() == alone(model_cache, saved[BETA], request)
    assert len(set(answers.values())) == 3


def test_requests_arriving_together_share_one_mixed_batch(
    server: in_process.InProcessBackend,
    saved: dict[str, pathlib.Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    requests = [
        (BASE, chat("I want my money back")),
        (ALPHA, chat("I want my money back")),
        (BETA, chat("The screen of my new laptop cracked after two days of use")),
        (ALPHA, chat("cannot log in", max_tokens=9)),
    ]

    async def scenario() -> tuple[list[str], list[str]]:
        await server.load_adapter(ALPHA, saved[ALPHA])
        await server.load_adapter(BETA, saved[BETA])
        by_itself = [
            content(await server.complete("chat/completions", dict(r), target=t))
            for t, r in requests
        ]
        # A long answer keeps the worker busy, so the next requests queue up together.
        busy = server.stream("completions", {"prompt": "x", "max_tokens": 400}, target=BASE)
        await anext(busy)
        caplog.set_level(logging.DEBUG, logger=in_process.__name__)
        together = await asyncio.gather(
            *(server.complete("chat/completions", dict(r), target=t) for t, r in requests)
        )
        await busy.aclose()
        return by_itself, [content(reply) for reply in together]

    by_itself, together = run(scenario)
    assert together == by_itself
    batches = [r for r in caplog.records if r.getMessage().startswith("generating a batch")]
    assert any(getattr(r, "count", 0) == len(requests) for r in batches), batches


def test_a_streamed_answer_is_the_complete_answer_in_pieces(
    server: in_process.InProcessBackend, saved: dict[str, pathlib.Path]
) -> None:
    request = chat("Where is my parcel?", max_tokens=24)

    async def scenario() -> None:
        await server.load_adapter(ALPHA, saved[ALPHA])
        whole = await server.complete("chat/completions", dict(request), target=ALPHA)
        streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
        chunks, raw = await events(server.stream("chat/completions", streamed, target=ALPHA))
        assert raw[-1] == b"data: [DONE]\n\n"
        *pieces, last, usage = chunks
        assert pieces[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert {c["id"] for c in chunks} == {chunks[0]["id"]}
        assert chunks[0]["id"].startswith("chatcmpl-")
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert {c["model"] for c in chunks} == {ALPHA}
        assert all(c["usage"] is None for c in [*pieces, last])
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in pieces)
        assert text == content(whole)
        assert all(c["choices"][0]["finish_reason"] is None for c in pieces)
        assert last["choices"][0] == {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": whole["choices"][0]["finish_reason"],
        }
        assert usage["choices"] == [] and usage["usage"] == whole["usage"]

        prompt = {"prompt": "Ticket: my parcel is late.", "temperature": 0, "max_tokens": 12}
        plain = await server.complete("completions", dict(prompt), target=BASE)
        chunks, _ = await events(
            server.stream("completions", {**prompt, "stream": True}, target=BASE)
        )
        assert all("usage" not in c and c["object"] == "text_completion" for c in chunks)
        assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    run(scenario)


def test_answers_have_openais_shapes(
    server: in_process.InProcessBackend, saved: dict[str, pathlib.Path], model_cache: pathlib.Path
) -> None:
    request = chat("Where is my parcel?", max_tokens=5)
    tokenizer = models.load(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache).tokenizer
    prompt_tokens = len(data.prompt_ids(tokenizer, request["messages"]))

    async def scenario() -> None:
        await server.load_adapter(ALPHA, saved[ALPHA])
        reply = await server.complete("chat/completions", dict(request), target=ALPHA)
        assert set(reply) == {"id", "object", "created", "model", "choices", "usage"}
        assert reply["id"].startswith("chatcmpl-") and reply["object"] == "chat.completion"
        assert reply["model"] == ALPHA and isinstance(reply["created"], int)
        [choice] = reply["choices"]
        assert choice == {
            "index": 0,
            "message": {"role": "assistant", "content": content(reply)},
            "logprobs": None,
            "finish_reason": "length",
        }
        assert reply["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 5,
            "total_tokens": prompt_tokens + 5,
        }

        line = "Ticket: my parcel is late."
        text: dict[str, Any] = {"prompt": [line], "temperature": 0, "max_tokens": 7}
        reply = await server.complete("completions", text, target=BASE)
        assert reply["id"].startswith("cmpl-") and reply["object"] == "text_completion"
        assert reply["model"] == BASE
        [choice] = reply["choices"]
        assert set(choice) == {"index", "text", "logprobs", "finish_reason"}
        assert reply["usage"]["completion_tokens"] == 7
        same = await server.complete("completions", {**text, "prompt": line}, target=BASE)
        assert same["choices"] == reply["choices"] and same["usage"] == reply["usage"]

    run(scenario)


def test_a_stop_string_ends_the_answer_before_it(server: in_process.InProcessBackend) -> None:
    request = chat("My parcel never arrived", max_tokens=24)

    async def scenario() -> None:
        full = await server.complete("chat/completions", dict(request), target=BASE)
        text = content(full)
        stop = text[8:11]
        expected = text[: text.find(stop)]
        stopped = await server.complete(
            "chat/completions", {**request, "stop": [stop]}, target=BASE
        )
        assert content(stopped) == expected
        assert stopped["choices"][0]["finish_reason"] == "stop"
        assert stopped["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]
        chunks, _ = await events(
            server.stream("chat/completions", {**request, "stop": stop}, target=BASE)
        )
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected

    run(scenario)


def test_sampling_with_a_seed_draws_the_same_answer_in_any_batch(
    server: in_process.InProcessBackend, saved: dict[str, pathlib.Path]
) -> None:
    sampled = chat("Where is my parcel?", temperature=1.0, top_p=0.9, seed=7)

    async def scenario() -> None:
        await server.load_adapter(ALPHA, saved[ALPHA])
        first = content(await server.complete("chat/completions", dict(sampled), target=ALPHA))
        replies = await asyncio.gather(
            server.complete("chat/completions", dict(sampled), target=ALPHA),
            server.complete("chat/completions", chat("refund"), target=BASE),
            server.complete("chat/completions", {**sampled, "seed": 8}, target=ALPHA),
        )
        greedy = await server.complete(
            "chat/completions", chat("Where is my parcel?"), target=ALPHA
        )
        assert content(replies[0]) == first
        assert content(replies[2]) != first
        assert content(greedy) != first

    run(scenario)


def test_refusals_are_openai_error_bodies(server: in_process.InProcessBackend) -> None:
    async def refused(
        endpoint: backend.Endpoint, body: dict[str, Any], target: str = BASE
    ) -> backend.UpstreamError:
        with pytest.raises(backend.UpstreamError) as caught:
            await server.complete(endpoint, body, target=target)
        return caught.value

    async def scenario() -> None:
        unknown = await refused("chat/completions", chat("hello"), target="nobody@ft-0")
        assert (unknown.status, unknown.body) == (
            404,
            {
                "object": "error",
                "message": "The model `nobody@ft-0` does not exist.",
                "type": "NotFoundError",
                "code": 404,
            },
        )
        with pytest.raises(backend.UpstreamError) as streamed:
            await anext(server.stream("chat/completions", chat("hello"), target="nobody@ft-0"))
        assert streamed.value.status == 404

        two = await refused("chat/completions", chat("hello", n=2))
        assert two.status == 400
        assert two.body == {
            "object": "error",
            "message": "only n=1 is supported",
            "type": "BadRequestError",
            "code": 400,
            "param": "n",
        }
        for field, value in [("temperature", -1), ("top_p", 0), ("max_tokens", 0), ("stop", 3)]:
            wrong = await refused("chat/completions", chat("hello", **{field: value}))
            assert (wrong.status, wrong.body["param"]) == (400, field)
        assert (await refused("chat/completions", {"messages": []})).body["param"] == "messages"
        assert (await refused("completions", {"prompt": ["a", "b"]})).body["param"] == "prompt"
        too_long = await refused("completions", {"prompt": "parcel " * 600})
        assert "maximum context length is 512 tokens" in too_long.body["message"]

    run(scenario)


def test_adapter_names_and_capacity_are_checked(
    model_cache: pathlib.Path, saved: dict[str, pathlib.Path]
) -> None:
    served = in_process.InProcessBackend(
        base_model=models.TINY_LLAMA, artifacts=None, cache_dir=model_cache, max_adapters=1
    )

    async def scenario() -> None:
        with pytest.raises(errors.InvalidRequest, match="cannot name an adapter"):
            await served.load_adapter("support.intent", saved[ALPHA])
        with pytest.raises(errors.InvalidRequest, match="cannot name an adapter"):
            await served.load_adapter(served.base_model, saved[ALPHA])
        await served.load_adapter(ALPHA, saved[ALPHA])
        with pytest.raises(errors.Conflict, match="unload one"):
            await served.load_adapter(BETA, saved[BETA])
        assert await served.loaded_adapters() == {ALPHA}
        await served.close()

    run(scenario)


def test_ten_adapters_cost_little_more_memory_than_one(
    server: in_process.InProcessBackend, model_cache: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """The benchmark's target (10 adapters within 1.2x the memory of one), on the built-in
    model with an objective's default LoRA (rank 8 on q_proj and v_proj)."""
    saved = [
        adapters.make_adapter(tmp_path / f"a{seed}", cache_dir=model_cache, seed=seed)
        for seed in range(10)
    ]

    async def scenario() -> tuple[int, int]:
        await server.load_adapter("support-intent@ft-0", saved[0])
        one = in_process.resident_bytes(server)
        for seed, path in enumerate(saved[1:], start=1):
            await server.load_adapter(f"support-intent@ft-{seed}", path)
        assert len(await server.loaded_adapters()) == 10
        return one, in_process.resident_bytes(server)

    one, ten = run(scenario)
    assert one < ten <= 1.2 * one
