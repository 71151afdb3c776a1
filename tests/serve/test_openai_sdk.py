"""The model API as applications call it, with the official ``openai`` SDK, on both backends:
the in-process one (the stack's serve) and vLLM's (a replica driving the HTTP double, which
records what vLLM would be sent).

Requests to an objective's models are prepared as the adapter's training data was: the PII
redacted with the objective's kinds, the user's text normalised, and the instruction the
adapter was trained under as the system message when the client sends none."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

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


def prepared(url: str, model: str, messages: list[dict[str, Any]]) -> Any:
    """:func:`chat`, once the replica prepares the objective's requests (it may still be
    reconciling a change another test made to the objective)."""
    answer = chat(url, model, messages)
    assert answer.headers["X-Tunewire-Input"].startswith("prepared"), answer.headers
    return answer


def sent_to_vllm(double: vllm_double.VllmDouble) -> list[dict[str, Any]]:
    chats = [r for r in double.requests if r.path == "/v1/chat/completions"]
    messages: list[dict[str, Any]] = chats[-1].body["messages"]
    return messages


def test_vllm_is_sent_what_the_adapter_was_trained_on(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    double, url = vllm
    parts = [{"type": "text", "text": RAW[:20]}, {"type": "text", "text": RAW[20:]}]
    raw = eventually(lambda: prepared(url, objective.name, [{"role": "user", "content": parts}]))
    assert (
        raw.headers["X-Tunewire-Input"]
        == "prepared; redacted=email:1; instruction=added; answer=labels"
    )
    assert raw.parse().model == f"{objective.name}@ft-sdk"
    assert sent_to_vllm(double) == [
        {"role": "system", "content": objectives.instruction(objective)},
        {"role": "user", "content": PREPARED},
    ]
    # A classification's answer is held to its labels: vLLM is asked for a choice of them.
    sent = [r for r in double.requests if r.path == "/v1/chat/completions"][-1].body
    assert sent["structured_outputs"] == {"choice": list(objective.labels)}
    assert raw.parse().choices[0].message.content in objective.labels

    # The client's own system message is kept (redacted too); the base model gets it all raw.
    own = [
        {"role": "system", "content": "Reply to bob@example.org"},
        {"role": "user", "content": RAW},
    ]
    told = chat(url, objective.name, own)
    assert (
        told.headers["X-Tunewire-Input"]
        == "prepared; redacted=email:2; instruction=client; answer=labels"
    )
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
    raw = eventually(lambda: prepared(url, objective.name, [{"role": "user", "content": RAW}]))
    assert (
        raw.headers["X-Tunewire-Input"]
        == "prepared; redacted=email:1; instruction=added; answer=labels"
    )
    trained_form = [
        {"role": "system", "content": objectives.instruction(objective)},
        {"role": "user", "content": PREPARED},
    ]
    as_trained = chat(url, objective.name, trained_form)
    assert (
        as_trained.headers["X-Tunewire-Input"]
        == "prepared; redacted=none; instruction=client; answer=labels"
    )
    answer = raw.parse().choices[0].message.content
    assert answer == as_trained.parse().choices[0].message.content
    assert answer in objective.labels  # held to the labels by a grammar in process


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


def test_the_vllm_backend_gets_the_openai_surface_it_serves(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    """Tools, tool calls in the history, response formats and logprobs reach vLLM as sent;
    the smaller of max_tokens and max_completion_tokens wins."""
    double, url = vllm
    tools = [{"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}]
    history = [
        {"role": "user", "content": "Refund order 7"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    answer = client(url).chat.completions.create(
        model="base-model",
        messages=history,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        logprobs=True,
        top_logprobs=2,
        max_tokens=30,
        max_completion_tokens=12,
    )
    assert answer.model == "base-model"
    sent = [r for r in double.requests if r.path == "/v1/chat/completions"][-1].body
    assert sent["messages"] == history
    assert sent["tools"] == tools and sent["tool_choice"] == "required"
    assert sent["response_format"]["json_schema"]["schema"] == schema
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert sent["max_tokens"] == 12 and "max_completion_tokens" not in sent


def test_streams_count_their_tokens_and_give_usage_when_asked(
    stack: embedded.EmbeddedStack, vllm: tuple[vllm_double.VllmDouble, str]
) -> None:
    for url, model in ((stack.service_urls["serve"], "base"), (vllm[1], "base-model")):
        counted = _tokens_counted(url, model)
        chunks = _streamed(url, model, stream_options={"include_usage": True})
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens >= 1 and not chunks[-1].choices
        quiet = _streamed(url, model)
        assert all(c.usage is None for c in quiet)  # not asked for: kept back, yet counted
        assert _tokens_counted(url, model) >= counted + 2 * usage.completion_tokens


def test_a_stream_that_breaks_off_ends_with_an_error_event(
    vllm: tuple[vllm_double.VllmDouble, str],
) -> None:
    double, url = vllm
    gate = double.hold_streams()
    stream = client(url).chat.completions.create(
        model="base-model",
        messages=[{"role": "user", "content": "Where is my parcel?"}],
        max_tokens=8,
        stream=True,
    )
    chunks = iter(stream)
    next(chunks)  # the first event arrived; then the server goes away
    double.stop()
    gate.set()
    try:
        with pytest.raises(openai.APIError, match="the answer broke off"):
            list(chunks)
    finally:
        double.start()


def test_refusals_are_the_sdks_own_exceptions(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    url = vllm[1]
    question = [{"role": "user", "content": "hi"}]
    wrong = openai.OpenAI(
        base_url=url + "/v1", api_key="not-a-token-of-anyone-at-all", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.PermissionDeniedError):
        client(url, "scoped").chat.completions.create(model=objective.name, messages=question)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client(url).chat.completions.create(model="no-such-model", messages=question)  # type: ignore[arg-type]
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        client(url).chat.completions.create(model="base-model", messages=[])
    with pytest.raises(openai.BadRequestError, match="unsupported parameter `best_of`"):
        client(url).chat.completions.create(
            model="base-model",
            messages=question,  # type: ignore[arg-type]
            extra_body={"best_of": 3},
        )
    with pytest.raises(openai.BadRequestError, match="`n` is at most 4"):
        client(url).chat.completions.create(model="base-model", messages=question, n=5)  # type: ignore[arg-type]
    slow = client(url, "slow")
    with pytest.raises(openai.RateLimitError):
        for _ in range(3):  # two a minute
            slow.chat.completions.create(model="base-model", messages=question, max_tokens=1)  # type: ignore[arg-type]
    unknown = httpx.get(
        url + "/v1/nothing-here", headers={"Authorization": f"Bearer {TOKENS['app']}"}
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == 404
    admin = httpx.get(
        url + "/v1/deployments/nothing-here", headers={"Authorization": f"Bearer {TOKENS['app']}"}
    )
    assert admin.json()["error"] in ("forbidden", "not_found")  # tunewire's shape there


def test_vllms_own_metrics_are_relayed_and_only_on_the_vllm_backend(
    stack: embedded.EmbeddedStack, vllm: tuple[vllm_double.VllmDouble, str]
) -> None:
    double, url = vllm
    relayed = httpx.get(url + "/metrics/vllm", timeout=10)  # public, like /metrics
    assert relayed.status_code == 200, relayed.text
    assert 'vllm:num_requests_waiting{model_name="base-model"}' in relayed.text
    assert relayed.headers["content-type"].startswith("text/plain")
    assert httpx.get(stack.service_urls["serve"] + "/metrics/vllm").status_code == 404
    double.stop()
    try:
        down = httpx.get(url + "/metrics/vllm", timeout=10)
        assert down.status_code == 503 and "unreachable" in down.text
    finally:
        double.start()


def test_models_name_their_root_and_parent(
    vllm: tuple[vllm_double.VllmDouble, str], objective: objectives.ObjectiveSpec
) -> None:
    pinned_name = f"{objective.name}@ft-sdk"

    def listed() -> dict[str, Any]:
        models = {m.id: m for m in client(vllm[1]).models.list()}
        assert pinned_name in models  # (re)loaded once the replica has reconciled
        return models

    models = eventually(listed)
    alias, pinned, base = models[objective.name], models[pinned_name], models["base-model"]
    assert (base.root, base.parent) == ("base-model", None)
    assert (alias.root, alias.parent) == (pinned_name, "base-model")
    assert (pinned.root, pinned.parent) == (pinned_name, "base-model")


def test_in_process_answers_hold_to_the_json_schema_asked(
    stack: embedded.EmbeddedStack, objective: objectives.ObjectiveSpec
) -> None:
    schema = {
        "type": "object",
        "properties": {"intent": {"enum": list(objective.labels)}, "urgent": {"type": "boolean"}},
        "required": ["intent", "urgent"],
        "additionalProperties": False,
    }
    url = stack.service_urls["serve"]
    for model in ("base", objective.name):
        answer = client(url).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "My kettle broke, I want my money back"}],
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
            max_tokens=32,
            temperature=0.7,
            seed=3,
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice
        parsed = json.loads(choice.message.content or "")
        assert set(parsed) == {"intent", "urgent"}
        assert parsed["intent"] in objective.labels and isinstance(parsed["urgent"], bool)
    with pytest.raises(openai.BadRequestError, match="the JSON schema cannot be used"):
        client(url).chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "t", "schema": {"type": 5}},
            },
        )
    with pytest.raises(openai.BadRequestError, match="needs the vLLM backend"):
        client(url).chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], logprobs=True
        )


def _streamed(url: str, model: str, **options: Any) -> list[Any]:
    """Every chunk of a short streamed answer."""
    return list(
        client(url).chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Where is my parcel?"}],
            max_tokens=4,
            stream=True,
            **options,
        )
    )


def _tokens_counted(url: str, model: str) -> float:
    """The replica's tunewire_serve_tokens_total for the model's completions."""
    text = httpx.get(url + "/metrics", timeout=10).text
    wanted = f'tunewire_serve_tokens_total{{kind="completion",model="{model}"}}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted))
