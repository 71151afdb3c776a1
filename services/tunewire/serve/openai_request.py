"""One reading of an OpenAI chat-completions or completions request, for every part of serve.

The gateway checks a request with it once, against this server's limits, before routing it;
the in-process backend builds its generation from the same typed request. Both so refuse the
same body with the same status, message and ``param``: 422 when the request is not one at
all (no ``model``, malformed ``messages`` or ``prompt``), 400 when a parameter's value is
refused or over a limit, or is not one this server knows (:data:`FORWARDED` lists those it
relays; nothing else reaches a backend). Every text a request carries — message contents,
tool calls and tool definitions, a response format's schema — counts toward the prompt limit.

Imports no torch: the gateway loads it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Literal

from tunewire.serve import backend, config

_MALFORMED = 422
_REFUSED = 400
_USAGE = "stream_options.include_usage"
_MAX_TOP_LOGPROBS = 20

FORWARDED = frozenset(
    {
        "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "seed", "stop", "n", "stream", "stream_options", "tools", "tool_choice",
        "parallel_tool_calls", "response_format", "logprobs", "top_logprobs", "echo",
        "presence_penalty", "frequency_penalty", "logit_bias", "user", "suffix",
        # vLLM's own sampling parameters and structured outputs, as its OpenAI server reads
        # them from the body.
        "top_k", "min_p", "repetition_penalty", "structured_outputs",
    }
)  # fmt: skip
"""The request fields this server reads or relays; a request with any other is refused."""


@dataclasses.dataclass(frozen=True)
class ResponseFormat:
    """What the answer must be: free text, any JSON object, JSON valid against a schema
    (OpenAI's ``response_format``), or one of some choices (vLLM's ``structured_outputs``)."""

    type: Literal["text", "json_object", "json_schema", "choice"]
    schema: dict[str, Any] | None = None
    """With ``json_schema``: the schema the answer must be valid against."""
    choices: tuple[str, ...] = ()
    """With ``choice``: the answers allowed."""


class RequestError(Exception):
    """A request the API refuses; ``status``, ``message`` and ``param`` as OpenAI words it
    (the gateway raises it for its own refusals too: the body, the caller's scope)."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclasses.dataclass(frozen=True)
class Message:
    """One turn of a conversation, its content as text."""

    role: str
    content: str


@dataclasses.dataclass(frozen=True)
class OpenAIRequest:
    """A checked request, with OpenAI's defaults for what it leaves out."""

    endpoint: backend.Endpoint
    model: str
    messages: tuple[Message, ...]
    """The conversation to answer (chat); empty for completions."""
    prompt: str | None
    """The text to continue (completions); None for chat."""
    max_tokens: int | None
    """``max_tokens`` (or ``max_completion_tokens``); None leaves it to the server."""
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    """Stop strings; empty ones are left out (they would end every answer at once)."""
    n: int
    stream: bool
    include_usage: bool
    """``stream_options.include_usage``: a streamed answer ends with a usage chunk."""
    response_format: ResponseFormat
    tools: tuple[dict[str, Any], ...]
    """Function tools the model may call (relayed to vLLM)."""
    tool_choice: Any
    """``none``, ``auto``, ``required`` or a named function; None when not sent."""
    logprobs: bool
    top_logprobs: int | None
    prompt_chars: int
    """Every text the request carries, in characters: the prompt or the messages (their
    tool calls included), the tool definitions and the response format's schema."""

    @property
    def prompt_param(self) -> str:
        """The field a refusal of the prompt names."""
        return "messages" if self.prompt is None else "prompt"


def parse(
    endpoint: backend.Endpoint, body: dict[str, Any], *, limits: config.ServeLimits | None = None
) -> OpenAIRequest:
    """Read ``body`` as OpenAI reads it; :class:`RequestError` says what is wrong.

    ``messages`` (chat: each with a string role and text content, a string or OpenAI's list
    of ``{"type": "text"}`` parts; null in an assistant turn that only called tools) or
    ``prompt`` (a string or a list of one), ``max_tokens`` and ``max_completion_tokens`` (the
    smaller cap wins), ``temperature`` (default 1; 0 is greedy), ``top_p``, ``seed``,
    ``stop``, ``n``, ``stream``, ``stream_options.include_usage``, ``response_format``,
    ``tools`` and ``tool_choice``, ``logprobs`` and ``top_logprobs``. ``limits``, where the
    request comes in, caps the prompt's characters, ``max_tokens`` and ``n``.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            _MALFORMED, "`model` is required: an objective, objective@run_id or the base"
        )
    unknown = sorted(set(body) - FORWARDED)
    if unknown:
        raise RequestError(_REFUSED, f"unsupported parameter `{unknown[0]}`", param=unknown[0])
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    texts: list[Any] = []
    if endpoint == "chat/completions":
        messages = _messages(body.get("messages"))
        texts = [m.content for m in messages]
        texts += [m.get("tool_calls") for m in body["messages"] if m.get("tool_calls")]
    else:
        prompt = _prompt(body.get("prompt"))
        texts = [prompt]
    options = _field(body, "stream_options", {}, valid=_is_object, must="an object")
    response_format = _answer_format(body)
    tools = tuple(_field(body, "tools", [], valid=_is_tools, must="a list of function tools"))
    texts += [*tools, response_format.schema, *response_format.choices]
    top_logprobs = _field(
        body, "top_logprobs", None, valid=_is_top_logprobs, must=f"an integer 0-{_MAX_TOP_LOGPROBS}"
    )
    request = OpenAIRequest(
        endpoint=endpoint,
        model=model,
        messages=messages,
        prompt=prompt,
        max_tokens=_max_tokens(body),
        temperature=float(
            _field(body, "temperature", 1.0, valid=_is_temperature, must="a number >= 0")
        ),
        top_p=float(_field(body, "top_p", 1.0, valid=_is_top_p, must="a number in (0, 1]")),
        seed=_field(body, "seed", None, valid=_is_int, must="an integer"),
        stop=_stops(body.get("stop")),
        n=_field(body, "n", 1, valid=_is_positive_int, must="a positive integer"),
        stream=_field(body, "stream", False, valid=_is_bool, must="a boolean"),
        include_usage=_field(
            options, "include_usage", False, valid=_is_bool, must="a boolean", param=_USAGE
        ),
        response_format=response_format,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        logprobs=bool(_field(body, "logprobs", False, valid=_is_logprobs, must="a boolean")),
        top_logprobs=top_logprobs,
        prompt_chars=sum(_chars(t) for t in texts if t is not None),
    )
    if limits is not None:
        _check_limits(request, limits)
    return request


def _max_tokens(body: dict[str, Any]) -> int | None:
    """``max_tokens`` or ``max_completion_tokens``; with both, the smaller cap wins."""
    caps = []
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_positive_int(value):
            raise RequestError(_REFUSED, f"`{name}` must be a positive integer", param=name)
        caps.append(value)
    return min(caps) if caps else None


def _answer_format(body: dict[str, Any]) -> ResponseFormat:
    """``response_format``, or ``structured_outputs`` (of which a choice is served)."""
    structured = body.get("structured_outputs")
    if structured is None:
        return _response_format(body.get("response_format"))
    if body.get("response_format") is not None:
        raise RequestError(
            _REFUSED,
            "send either `response_format` or `structured_outputs`, not both",
            param="structured_outputs",
        )
    choices = structured.get("choice") if isinstance(structured, dict) else None
    if (
        not isinstance(choices, list)
        or not choices
        or not all(isinstance(c, str) and c for c in choices)
        or len(structured) != 1
    ):
        raise RequestError(
            _REFUSED,
            '`structured_outputs` is served as `{"choice": [non-empty strings]}`; use '
            "`response_format` for JSON",
            param="structured_outputs",
        )
    return ResponseFormat("choice", choices=tuple(choices))


def _response_format(value: Any) -> ResponseFormat:
    if value is None:
        return ResponseFormat("text")
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return ResponseFormat(kind)
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(
                _REFUSED,
                "`response_format.json_schema.schema` must be a JSON schema object",
                param="response_format",
            )
        return ResponseFormat("json_schema", schema)
    raise RequestError(
        _REFUSED,
        "`response_format.type` must be text, json_object or json_schema",
        param="response_format",
    )


def _tool_choice(value: Any, tools: tuple[dict[str, Any], ...]) -> Any:
    if value is None or value in ("none", "auto"):
        return value
    names = {t["function"]["name"] for t in tools}
    named = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if (value == "required" and tools) or named in names:
        return value
    raise RequestError(
        _REFUSED,
        "`tool_choice` must be none, auto, required (with tools) or one of the tools by name",
        param="tool_choice",
    )


def _is_tools(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        for t in value
    )


def _is_top_logprobs(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= _MAX_TOP_LOGPROBS


def _is_logprobs(value: Any) -> bool:
    """Chat takes a boolean; completions an integer count (its own top logprobs)."""
    return _is_bool(value) or (_is_int(value) and 0 <= value <= _MAX_TOP_LOGPROBS)


def _chars(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))


def _check_limits(request: OpenAIRequest, limits: config.ServeLimits) -> None:
    if request.n > limits.max_choices:
        raise RequestError(
            _REFUSED, f"`n` is at most {limits.max_choices} on this server", param="n"
        )
    if request.prompt_chars > limits.max_prompt_chars:
        raise RequestError(
            _REFUSED,
            f"the prompt is {request.prompt_chars} characters; this server accepts at most "
            f"{limits.max_prompt_chars}",
            param=request.prompt_param,
        )
    if request.max_tokens is not None and request.max_tokens > limits.max_output_tokens:
        raise RequestError(
            _REFUSED,
            f"max_tokens {request.max_tokens} is over this server's limit of "
            f"{limits.max_output_tokens}",
            param="max_tokens",
        )


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise RequestError(_MALFORMED, "`messages` must be a non-empty list", param="messages")
    turns = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(_MALFORMED, "each message needs a string `role`", param="messages")
        content = message.get("content")
        if content is None and message.get("tool_calls"):
            content = ""  # an assistant turn that only called tools
        turns.append(Message(role=message["role"], content=_content(content)))
    return tuple(turns)


def _content(value: Any) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise RequestError(
        _MALFORMED, "each message needs a text `content` (a string or text parts)", param="messages"
    )


def _prompt(value: Any) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise RequestError(
            _MALFORMED, "`prompt` must be a string (or a list of one string)", param="prompt"
        )
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise RequestError(_REFUSED, "`stop` must be a string or a list of strings", param="stop")
    return tuple(s for s in value if s)


def _field(
    source: dict[str, Any],
    key: str,
    default: Any,
    *,
    valid: Callable[[Any], bool],
    must: str,
    param: str | None = None,
) -> Any:
    """``source[key]``, or ``default`` when absent or null; a value not ``valid`` is refused."""
    value = source.get(key)
    if value is None:
        return default
    if not valid(value):
        name = param or key
        raise RequestError(_REFUSED, f"`{name}` must be {must}", param=name)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_temperature(value: Any) -> bool:
    return _is_number(value) and value >= 0


def _is_top_p(value: Any) -> bool:
    return _is_number(value) and 0 < value <= 1


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)
