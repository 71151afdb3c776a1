"""Answers held to a JSON schema (``response_format``) or to a choice of answers
(``structured_outputs``: a classification's labels) in process, with llguidance.

llguidance (one of vLLM's own structured-output backends) compiles a schema to a grammar
over the model's tokenizer; at each step a row's matcher gives the tokens that keep its
answer valid, the others are masked out before the row's token is picked, and end of turn is
only allowed once the JSON is complete. So a JSON answer parses, whatever the adapter has
learnt, unless it runs out of tokens first (``finish_reason: length``).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import numpy as np
import torch

from tunewire.serve import openai_request, openai_response

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def grammar_of(response_format: openai_request.ResponseFormat) -> str | None:
    """The grammar an answer must follow; None for free text. A schema llguidance cannot
    compile is an OpenAI 400 naming ``response_format``."""
    if response_format.type == "text":
        return None
    if response_format.type == "choice":
        alternatives = " | ".join(json.dumps(c) for c in response_format.choices)
        return llguidance.LLMatcher.grammar_from_lark(f"start: {alternatives}")
    schema = _ANY_OBJECT if response_format.schema is None else response_format.schema
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
    except (ValueError, TypeError) as exc:
        raise _refused(f"the JSON schema cannot be used: {exc}") from None
    valid, problem = _validate(grammar)
    if not valid:
        raise _refused(f"the JSON schema cannot be used: {problem}")
    return grammar


class Vocabulary:
    """The model's tokenizer as llguidance reads it, built once on first use."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._wrapped: llguidance.LLTokenizer | None = None

    def matcher(self, grammar: str) -> Matcher:
        """A fresh matcher of one answer."""
        with self._lock:
            if self._wrapped is None:
                self._wrapped = llguidance.hf.from_tokenizer(self._tokenizer)
            wrapped = self._wrapped
        return Matcher(llguidance.LLMatcher(wrapped, grammar), wrapped.vocab_size)


class Matcher:
    """One row's progress through its grammar."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._mask = llguidance.numpy.allocate_token_bitmask(1, vocab_size)

    def restrict(self, logits: torch.Tensor) -> None:
        """Mask, in place, the logits of every token the grammar does not allow next (and
        of the padding rows some models' output layer has beyond the tokenizer's vocab).

        The mask holds one bit per token, token ``i`` at bit ``i % 32`` of word ``i // 32``;
        unpacked here rather than with llguidance's torch helper, which compiles a kernel
        with ``torch.compile`` on first use."""
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._mask, 0)
        bits = np.unpackbits(self._mask.astype("<i4", copy=False).view(np.uint8), bitorder="little")
        blocked = torch.from_numpy(bits[: self._vocab_size] == 0)
        logits[: self._vocab_size].masked_fill_(blocked, -torch.inf)
        logits[self._vocab_size :] = -torch.inf

    def accept(self, token: int) -> None:
        """Advance past the token picked (an allowed one, since :meth:`restrict` ran)."""
        self._matcher.consume_token(token)


def _validate(grammar: str) -> tuple[bool, str]:
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    return not problem, problem


def _refused(message: str) -> Exception:
    return openai_response.refusal(400, message, param="response_format")
