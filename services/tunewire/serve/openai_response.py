"""Answers in the shapes of OpenAI's and vLLM's chat and completions APIs.

A backend that generates its own text (the in-process one) hands in text, counts and reasons
and gets back what a client of vLLM would: a whole body, Server-Sent Event chunks, usage,
and refusals worded as vLLM words them. Kept apart from generation, so the shapes hold no
model code.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tunewire.serve import backend

DONE = b"data: [DONE]\n\n"
"""The event that ends every stream."""

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
}


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request's answer: what its body, or every chunk of its stream, is headed with."""

    endpoint: backend.Endpoint
    key: str
    """Unique to the answer: its ``id`` is this after ``chatcmpl-`` or ``cmpl-``."""
    created: int
    model: str

    @property
    def chat(self) -> bool:
        """Whether it answers ``chat/completions`` (else ``completions``)."""
        return self.endpoint == "chat/completions"

    def header(self, *, chunk: bool) -> dict[str, Any]:
        """The fields before ``choices``: a chat chunk's ``object`` differs from its body's."""
        if self.chat:
            ident = f"chatcmpl-{self.key}"
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            ident, kind = f"cmpl-{self.key}", "text_completion"
        return {"id": ident, "object": kind, "created": self.created, "model": self.model}

    def body(self, text: str, *, finish_reason: str, usage: dict[str, int]) -> dict[str, Any]:
        """The whole answer of a request that did not stream."""
        choice: dict[str, Any] = {"index": 0}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": finish_reason}
        return {**self.header(chunk=False), "choices": [choice], "usage": usage}


class Stream:
    """The Server-Sent Events of one streamed answer, chunk by chunk as OpenAI sends them.

    A chat answer opens with the assistant's role; when the request asked for usage, every
    chunk carries ``usage: null`` and the usage comes in a chunk of its own before
    :data:`DONE`.
    """

    def __init__(self, answer: Answer, *, include_usage: bool) -> None:
        self._header = answer.header(chunk=True)
        self._chat = answer.chat
        self._include_usage = include_usage

    def opening(self) -> list[bytes]:
        """What is sent once generation has started: the role (chat only)."""
        if not self._chat:
            return []
        return [self._event({"delta": {"role": "assistant", "content": ""}}, None)]

    def text(self, piece: str) -> bytes:
        """A piece of the answer's text."""
        return self._event({"delta": {"content": piece}} if self._chat else {"text": piece}, None)

    def closing(self, finish_reason: str, usage: dict[str, int]) -> list[bytes]:
        """Why the answer ended, its usage when asked for, then :data:`DONE`."""
        events = [self._event({"delta": {}} if self._chat else {"text": ""}, finish_reason)]
        if self._include_usage:
            events.append(_sse({**self._header, "choices": [], "usage": usage}))
        return [*events, DONE]

    def _event(self, choice: dict[str, Any], finish_reason: str | None) -> bytes:
        full = {"index": 0, **choice, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self._header, "choices": [full]}
        if self._include_usage:
            chunk["usage"] = None
        return _sse(chunk)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` of an answer."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def refusal(status: int, message: str, *, param: str | None = None) -> backend.UpstreamError:
    """An error as vLLM's OpenAI server words it, passed on by the gateway as it is."""
    body: dict[str, Any] = {
        "object": "error",
        "message": message,
        "type": _ERROR_TYPES[status],
        "code": status,
    }
    if param is not None:
        body["param"] = param
    return backend.UpstreamError(status, body)


def model_not_found(model: str) -> backend.UpstreamError:
    """The refusal of a request for a model this server does not serve."""
    return refusal(404, f"The model `{model}` does not exist.")


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
