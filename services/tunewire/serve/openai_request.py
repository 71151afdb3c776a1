"""One reading of an OpenAI chat-completions or completions request, for every part of serve.

The gateway checks a request with it once, against this server's limits, before routing it;
the in-process backend builds its generation from the same typed request. Both so refuse the
same body with the same status, message and ``param``: 422 when the request is not one at
all (no ``model``, malformed ``messages`` or ``prompt``), 400 when a parameter's value is
refused or over a limit. Fields not read here (``logprobs``, ``tools``, ...) are left to the
backend: vLLM reads them from the body it is relayed.

Imports no torch: the gateway loads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tunewire.serve import backend, config

_MALFORMED = 422
_REFUSED = 400
_USAGE = "stream_options.include_usage"


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

    @property
    def prompt_param(self) -> str:
        """The field a refusal of the prompt names."""
        return "messages" if self.prompt is None else "prompt"

    @property
    def prompt_chars(self) -> int:
        """The prompt's length in characters, all messages together."""
        if self.prompt is None:
            return sum(len(m.content) for m in self.messages)
        return len(self.prompt)


def parse(
    endpoint: backend.Endpoint, body: dict[str, Any], *, limits: config.ServeLimits | None = None
) -> OpenAIRequest:
    """Read ``body`` as OpenAI reads it; :class:`RequestError` says what is wrong.

    ``messages`` (chat: each with a string role and text content, a string or OpenAI's list
    of ``{"type": "text"}`` parts) or ``prompt`` (a string or a list of one), ``max_tokens``
    (or ``max_completion_tokens``), ``temperature`` (default 1; 0 is greedy), ``top_p``,
    ``seed``, ``stop``, ``n``, ``stream`` and ``stream_options.include_usage``. ``limits``,
    where the request comes in, caps the prompt's characters and ``max_tokens``.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(
            _MALFORMED, "`model` is required: an objective, objective@run_id or the base"
        )
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    if endpoint == "chat/completions":
        messages = _messages(body.get("messages"))
    else:
        prompt = _prompt(body.get("prompt"))
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and not _is_positive_int(max_tokens):
        raise RequestError(_REFUSED, "`max_tokens` must be a positive integer", param="max_tokens")
    options = _field(body, "stream_options", {}, valid=_is_object, must="an object")
    request = OpenAIRequest(
        endpoint=endpoint,
        model=model,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
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
    )
    if limits is not None:
        _check_limits(request, limits)
    return request


def _check_limits(request: OpenAIRequest, limits: config.ServeLimits) -> None:
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
