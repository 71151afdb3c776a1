"""Answers held to a JSON schema or to a choice of answers, with llguidance: what the
in-process serving backend does for ``response_format`` and ``structured_outputs``, and the
evaluator for an extraction's schema, so an adapter is scored as it is served.

llguidance (one of vLLM's own structured-output backends) compiles a schema to a grammar
over the model's tokenizer; at each step a row's matcher gives the tokens that keep its
answer valid, the others are masked out before the row's token is picked, and end of turn is
only allowed once the JSON is complete. So a JSON answer parses, whatever the adapter has
learnt, unless it runs out of tokens first (``finish_reason: length``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import numpy as np
import torch

ANY_OBJECT: dict[str, Any] = {"type": "object"}
"""The schema of ``response_format: json_object``: any JSON object."""


class UnusableSchema(ValueError):
    """A JSON schema llguidance cannot compile into a grammar."""


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """The grammar of JSON valid against ``schema``, compact (no free whitespace, as the
    canonical JSON extraction adapters learn); :class:`UnusableSchema` says why not."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            json.dumps(schema), defaults={"whitespace_flexible": False}
        )
    except (ValueError, TypeError) as exc:
        raise UnusableSchema(str(exc)) from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise UnusableSchema(problem)
    return grammar


def choice_grammar(choices: Sequence[str]) -> str:
    """The grammar of exactly one of ``choices``."""
    return llguidance.LLMatcher.grammar_from_lark(
        "start: " + " | ".join(json.dumps(c) for c in choices)
    )


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
        blocked = torch.from_numpy(bits[: self._vocab_size] == 0).to(logits.device)
        logits[: self._vocab_size].masked_fill_(blocked, -torch.inf)
        logits[self._vocab_size :] = -torch.inf

    def accept(self, token: int) -> None:
        """Advance past the token picked (an allowed one, since :meth:`restrict` ran)."""
        self._matcher.consume_token(token)
