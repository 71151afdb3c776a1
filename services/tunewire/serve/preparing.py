"""Prepare a request to an objective's model as its adapter's training input was prepared.

The adapter learnt from redacted, normalised text under its objective's instruction; a client
sends raw text, often without a system message. So before a request reaches the backend every
text of it is redacted with the contract's PII kinds (no raw PII reaches the model or its
logs), the user's turns (and a completion's prompt) are normalised and cut as training text
was, and the instruction becomes the system message when the client sends none. What was
done is told back in the ``X-Tunewire-Input`` header.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Literal

from tunewire.core.state import model_input, objectives
from tunewire.serve import openai_request

HEADER = "X-Tunewire-Input"
"""Says how the request was prepared: ``raw``, or ``prepared; redacted=...; instruction=...``."""

Instruction = Literal["added", "client", "none"]


@dataclasses.dataclass(frozen=True)
class Preparation:
    """What was done to one request."""

    prepared: bool
    redacted: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    instruction: Instruction = "none"
    held_to: Literal["labels", "schema"] | None = None
    """What the answer was held to: the objective's labels, or its output's JSON schema."""

    def header(self) -> str:
        """The value of :data:`HEADER`."""
        if not self.prepared:
            return "raw"
        counts = ",".join(f"{kind}:{n}" for kind, n in sorted(self.redacted.items())) or "none"
        told = f"prepared; redacted={counts}; instruction={self.instruction}"
        return told + (f"; answer={self.held_to}" if self.held_to else "")


RAW = Preparation(prepared=False)


def prepare(
    body: dict[str, Any],
    asked: openai_request.OpenAIRequest,
    contract: model_input.InputContract | None,
) -> Preparation:
    """Rewrite ``body`` (the request the backend is sent) under ``contract``; None leaves it
    as sent. Message contents become plain strings."""
    if contract is None:
        return RAW
    counts: collections.Counter[str] = collections.Counter()
    if asked.prompt is not None:
        body["prompt"] = model_input.prepare_text(asked.prompt, contract, counts)
        return Preparation(prepared=True, redacted=counts)
    messages: list[dict[str, Any]] = body["messages"]
    for sent, message in zip(messages, asked.messages, strict=True):
        if message.role == "user":
            sent["content"] = model_input.prepare_text(message.content, contract, counts)
        elif sent.get("content") is not None:
            sent["content"] = model_input.redact_text(
                message.content, counts=counts, contract_=contract
            )
    instruction: Instruction = "client"
    if not any(m.role in ("system", "developer") for m in asked.messages):
        messages.insert(0, {"role": "system", "content": contract.instruction})
        instruction = "added"
    return Preparation(True, counts, instruction, held_to=_hold(body, asked, contract))


def _hold(
    body: dict[str, Any],
    asked: openai_request.OpenAIRequest,
    contract: model_input.InputContract,
) -> Literal["labels", "schema"] | None:
    """Hold the answer to the task, unless the client asks for another format or offers
    tools: a classification's to one of its labels (vLLM's structured outputs' choice), an
    extraction's to its output's JSON schema (``response_format``); a grammar in process."""
    if asked.response_format.type != "text" or asked.tools:
        return None
    if contract.task == "classification":
        body["structured_outputs"] = {"choice": list(contract.labels)}
        return "labels"
    if contract.output is not None:
        body["response_format"] = json_schema_format(contract.output)
        return "schema"
    return None


def json_schema_format(output: objectives.Output) -> dict[str, Any]:
    """OpenAI's ``response_format`` holding an answer to an extraction's output."""
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": output.json_schema(), "strict": True},
    }
