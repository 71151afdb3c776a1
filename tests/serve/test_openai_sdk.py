"""The model API as applications call it, with the official ``openai`` SDK, on both backends:
the in-process one (the stack's serve) and vLLM's (a replica driving the HTTP double, which
records what vLLM would be sent).

Requests to an objective's models are prepared as the adapter's training data was: the PII
redacted with the objective's kinds, the user's text normalised, and the instruction the
adapter was trained under as the system message when the client sends none."""

from __future__ import annotations

from typing import Any

import openai

from tests.support import datasets, vllm_double
from tests.support.stacks import TOKENS
from tests.support.waiting import eventually
from tunewire.core.base import store
from tunewire.core.state import objectives
from tunewire.stack import embedded

RAW = "Please  mail the refund to anna.schmidt@example.com\n\ntoday"
PREPARED = "Please mail the refund to <EMAIL> today"


def client(url: str, who: str = "app") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=TOKENS[who], max_retries=0)


def chat(url: str, model: str, messages: list[dict[str, Any]]) -> Any:
    """The SDK's raw response (headers and the parsed completion)."""
    return client(url).chat.completions.with_raw_response.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )


def sent_to_vllm(double: vllm_double.VllmDouble) -> list[dict[str, Any]]:
    chats = [r for r in double.requests if r.path == "/v1/chat/completions"]
    messages: list[dict[str, Any]] = chats[-1].body["messages"]
    return messages


def test_vllm_is_sent_what_the_adapter_was_trained_on(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    double, url = vllm
    parts = [{"type": "text", "text": RAW[:20]}, {"type": "text", "text": RAW[20:]}]
    raw = eventually(lambda: chat(url, objective.name, [{"role": "user", "content": parts}]))
    assert raw.headers["X-Tunewire-Input"] == "prepared; redacted=email:1; instruction=added"
    assert raw.parse().model == f"{objective.name}@ft-sdk"
    assert sent_to_vllm(double) == [
        {"role": "system", "content": objectives.instruction(objective)},
        {"role": "user", "content": PREPARED},
    ]

    # The client's own system message is kept (redacted too); the base model gets it all raw.
    own = [
        {"role": "system", "content": "Reply to bob@example.org"},
        {"role": "user", "content": RAW},
    ]
    told = chat(url, objective.name, own)
    assert told.headers["X-Tunewire-Input"] == "prepared; redacted=email:2; instruction=client"
    assert sent_to_vllm(double) == [
        {"role": "system", "content": "Reply to <EMAIL>"},
        {"role": "user", "content": PREPARED},
    ]
    base = chat(url, "base-model", own)
    assert base.headers["X-Tunewire-Input"] == "raw"
    assert sent_to_vllm(double) == own


def test_the_alias_answers_raw_text_as_it_answers_the_training_form(
    stack: embedded.EmbeddedStack, objective: objectives.ObjectiveSpec
) -> None:
    """On the in-process backend (real generation, greedy), a raw request and one written in
    the training data's form get the same answer: there is no train/serve skew."""
    url = stack.service_urls["serve"]
    raw = eventually(lambda: chat(url, objective.name, [{"role": "user", "content": RAW}]))
    assert raw.headers["X-Tunewire-Input"] == "prepared; redacted=email:1; instruction=added"
    trained_form = [
        {"role": "system", "content": objectives.instruction(objective)},
        {"role": "user", "content": PREPARED},
    ]
    as_trained = chat(url, objective.name, trained_form)
    assert as_trained.headers["X-Tunewire-Input"] == "prepared; redacted=none; instruction=client"
    answer = raw.parse().choices[0].message.content
    assert answer == as_trained.parse().choices[0].message.content


def test_an_admin_can_switch_preparation_off_per_objective(
    bucket: store.ArtifactStore,
    vllm: tuple[vllm_double.VllmDouble, str],
    objective: objectives.ObjectiveSpec,
) -> None:
    double, url = vllm
    artifacts = bucket
    off = objective.model_copy(update={"serving": objectives.Serving(prepare_input=False)})
    datasets.register(artifacts, off)
    try:

        def passed_raw() -> None:
            answer = chat(url, objective.name, [{"role": "user", "content": RAW}])
            assert answer.headers["X-Tunewire-Input"] == "raw"

        eventually(passed_raw)
        assert sent_to_vllm(double) == [{"role": "user", "content": RAW}]
    finally:
        datasets.register(artifacts, objective)
