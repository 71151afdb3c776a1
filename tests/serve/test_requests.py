"""The OpenAI request parser the gateway and the in-process backend share: what a valid chat
or completions body reads as, and which status and ``param`` refuse each invalid field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tunewire.serve import backend, config, openai_request

LIMITS = config.ServeLimits(max_prompt_chars=30, max_output_tokens=8)
CHAT: dict[str, Any] = {"model": "base", "messages": [{"role": "user", "content": "hello"}]}
COMPLETION: dict[str, Any] = {"model": "base", "prompt": "Ticket: late"}


def refused(
    endpoint: backend.Endpoint, body: dict[str, Any], *, limits: config.ServeLimits | None = None
) -> openai_request.RequestError:
    with pytest.raises(openai_request.RequestError) as caught:
        openai_request.parse(endpoint, body, limits=limits)
    return caught.value


def test_a_chat_body_reads_with_openais_defaults() -> None:
    parts = [{"type": "text", "text": "my parcel "}, {"type": "text", "text": "is late"}]
    body = CHAT | {
        "messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": parts}]
    }

    request = openai_request.parse("chat/completions", body, limits=LIMITS)

    assert request == openai_request.OpenAIRequest(
        endpoint="chat/completions",
        model="base",
        messages=(
            openai_request.Message(role="system", content="Classify."),
            openai_request.Message(role="user", content="my parcel is late"),
        ),
        prompt=None,
        max_tokens=None,
        temperature=1.0,
        top_p=1.0,
        seed=None,
        stop=(),
        n=1,
        stream=False,
        include_usage=False,
        response_format=openai_request.ResponseFormat("text"),
        tools=(),
        tool_choice=None,
        logprobs=False,
        top_logprobs=None,
        prompt_chars=26,
    )
    assert request.prompt_param == "messages"


def test_a_choice_of_answers_is_read_from_vllms_structured_outputs() -> None:
    body = CHAT | {"structured_outputs": {"choice": ["refund", "shipping"]}}

    request = openai_request.parse("chat/completions", body)

    assert request.response_format == openai_request.ResponseFormat(
        "choice", choices=("refund", "shipping")
    )


def test_tools_tool_calls_and_schemas_are_read_and_count_toward_the_prompt() -> None:
    tool = {"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}
    call = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    body = CHAT | {
        "messages": [
            {"role": "user", "content": "Refund it"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ],
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "refund"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        "logprobs": True,
        "top_logprobs": 3,
        "max_tokens": 9,
        "max_completion_tokens": 5,
    }

    request = openai_request.parse("chat/completions", body)

    assert request.messages[1] == openai_request.Message(role="assistant", content="")
    assert request.tools == (tool,) and request.tool_choice["function"]["name"] == "refund"
    assert request.response_format == openai_request.ResponseFormat("json_schema", schema)
    assert (request.logprobs, request.top_logprobs, request.max_tokens) == (True, 3, 5)
    texts = ["Refund it", "", "done", [call], tool, schema]
    assert request.prompt_chars == sum(
        len(t) if isinstance(t, str) else len(json.dumps(t)) for t in texts
    )


def test_a_completion_body_reads_every_field_it_sets() -> None:
    body = COMPLETION | {
        "prompt": ["Ticket: late"],
        "max_completion_tokens": 8,
        "temperature": 0,
        "top_p": 0.5,
        "seed": 7,
        "stop": ["", "\n"],
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    request = openai_request.parse("completions", body, limits=LIMITS)

    assert (request.prompt, request.messages, request.prompt_param) == (
        "Ticket: late",
        (),
        "prompt",
    )
    assert (request.max_tokens, request.temperature, request.top_p) == (8, 0.0, 0.5)
    assert (request.seed, request.stop, request.n) == (7, ("\n",), 1)
    assert request.stream and request.include_usage
    assert openai_request.parse("completions", COMPLETION | {"stop": "END"}).stop == ("END",)


@pytest.mark.parametrize(
    ("endpoint", "fields", "status", "param"),
    [
        ("chat/completions", {"model": ""}, 422, None),
        ("completions", {"model": 3}, 422, None),
        ("chat/completions", {"messages": "hello"}, 422, "messages"),
        ("chat/completions", {"messages": []}, 422, "messages"),
        ("chat/completions", {"messages": [{"content": "hi"}]}, 422, "messages"),
        ("chat/completions", {"messages": [{"role": "user", "content": None}]}, 422, "messages"),
        (
            "chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            422,
            "messages",
        ),
        ("completions", {"prompt": ["a", "b"]}, 422, "prompt"),
        ("completions", {"prompt": 3}, 422, "prompt"),
        ("chat/completions", {"max_tokens": 0}, 400, "max_tokens"),
        ("chat/completions", {"max_tokens": True}, 400, "max_tokens"),
        ("completions", {"max_completion_tokens": "4"}, 400, "max_completion_tokens"),
        ("chat/completions", {"best_of": 2}, 400, "best_of"),
        ("chat/completions", {"response_format": {"type": "xml"}}, 400, "response_format"),
        (
            "chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {"name": "s"}}},
            400,
            "response_format",
        ),
        ("chat/completions", {"tools": [{"type": "function"}]}, 400, "tools"),
        ("chat/completions", {"tool_choice": "required"}, 400, "tool_choice"),
        (
            "chat/completions",
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            400,
            "tool_choice",
        ),
        ("chat/completions", {"top_logprobs": 21}, 400, "top_logprobs"),
        ("chat/completions", {"structured_outputs": {"choice": []}}, 400, "structured_outputs"),
        ("chat/completions", {"structured_outputs": {"regex": "a+"}}, 400, "structured_outputs"),
        (
            "chat/completions",
            {"structured_outputs": {"choice": ["a"]}, "response_format": {"type": "text"}},
            400,
            "structured_outputs",
        ),
        ("chat/completions", {"logprobs": "yes"}, 400, "logprobs"),
        ("chat/completions", {"temperature": -1}, 400, "temperature"),
        ("chat/completions", {"temperature": "hot"}, 400, "temperature"),
        ("chat/completions", {"top_p": 0}, 400, "top_p"),
        ("completions", {"top_p": 1.5}, 400, "top_p"),
        ("chat/completions", {"seed": 1.5}, 400, "seed"),
        ("chat/completions", {"stop": 3}, 400, "stop"),
        ("completions", {"stop": ["a", 1]}, 400, "stop"),
        ("chat/completions", {"n": 0}, 400, "n"),
        ("chat/completions", {"stream": "yes"}, 400, "stream"),
        ("completions", {"stream_options": "usage"}, 400, "stream_options"),
        (
            "chat/completions",
            {"stream_options": {"include_usage": 1}},
            400,
            "stream_options.include_usage",
        ),
    ],
)
def test_each_invalid_field_is_refused_with_its_param(
    endpoint: backend.Endpoint, fields: dict[str, Any], status: int, param: str | None
) -> None:
    body = (CHAT if endpoint == "chat/completions" else COMPLETION) | fields

    error = refused(endpoint, body)

    assert (error.status, error.param) == (status, param)
    assert error.message


def test_the_servers_limits_are_checked_only_when_given() -> None:
    long_chat = CHAT | {"messages": [{"role": "user", "content": "x" * 31}]}
    long_prompt = COMPLETION | {"prompt": "x" * 31}
    greedy = CHAT | {"max_tokens": 9}

    assert refused("chat/completions", long_chat, limits=LIMITS).param == "messages"
    assert refused("completions", long_prompt, limits=LIMITS).param == "prompt"
    over = refused("chat/completions", greedy, limits=LIMITS)
    assert (over.status, over.param) == (400, "max_tokens")
    assert "limit of 8" in over.message
    unlimited: list[tuple[backend.Endpoint, dict[str, Any]]] = [
        ("chat/completions", long_chat),
        ("completions", long_prompt),
        ("chat/completions", greedy),
    ]
    for endpoint, body in unlimited:
        openai_request.parse(endpoint, body)
    at_limits = CHAT | {"messages": [{"role": "user", "content": "x" * 30}], "max_tokens": 8}
    assert openai_request.parse("chat/completions", at_limits, limits=LIMITS).max_tokens == 8
