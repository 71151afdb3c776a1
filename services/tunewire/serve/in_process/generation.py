"""One request's generation inside a batch: its job, its row, how it samples and stops.

A batch answers requests with different sampling, stop strings and token limits in one
``generate`` call, so each of those is applied per row here, by a stopping criterion and a
logits processor over all rows: an answer so does not depend on the requests it was batched
with. Rows hand their text back to the request's event loop as it settles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch
import transformers

from tunewire.workloads import constraints


@dataclasses.dataclass(frozen=True)
class Ask:
    """What to generate: the prompt's token ids and how to answer it."""

    prompt: list[int]
    max_tokens: int
    stops: tuple[str, ...]
    temperature: float
    top_p: float
    seed: int | None
    grammar: str | None = None
    """What the answer must follow (a JSON schema's grammar, :mod:`constraints`)."""


@dataclasses.dataclass(frozen=True)
class Started:
    """The request's batch has begun generating."""


@dataclasses.dataclass(frozen=True)
class Text:
    """More of the answer, settled: no stop string can claim it any more."""

    text: str


@dataclasses.dataclass(frozen=True)
class Finished:
    """The answer is complete."""

    reason: str
    """``stop`` (end of turn or a stop string) or ``length`` (the token limit)."""
    completion_tokens: int


@dataclasses.dataclass(frozen=True)
class Failed:
    """The request cannot be answered; ``error`` is raised to its caller."""

    error: Exception


Event = Started | Text | Finished | Failed


@dataclasses.dataclass(eq=False)
class Job:
    """A request on its way through the worker, and the way back to its event loop."""

    target: str
    ask: Ask
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False
    """Set when nobody waits for the answer any more; its row stops at the next token."""
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))
    inbox: asyncio.Queue[Event] = dataclasses.field(default_factory=asyncio.Queue)

    async def receive(self) -> Started | Text | Finished:
        """The next event from the worker; a failure is raised."""
        event = await self.inbox.get()
        if isinstance(event, Failed):
            raise event.error
        return event

    def send(self, event: Event) -> None:
        """Hand an event to the request's event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening
            self.cancelled = True


class Row:
    """One request's answer as it is generated: text is released once no stop string can
    still claim it, and the row ends at end of turn, a stop string or its token limit."""

    def __init__(
        self,
        job: Job,
        *,
        context: int,
        decode: Callable[[list[int]], str],
        eos_ids: frozenset[int],
        matcher: constraints.Matcher | None = None,
    ) -> None:
        """``context`` is the model's length in tokens, ``decode`` turns generated ids into
        text, ``eos_ids`` end the turn and ``matcher`` holds the answer to its grammar."""
        self.job = job
        self.matcher = matcher
        ask = job.ask
        self.limit = min(ask.max_tokens, context - len(ask.prompt))
        self.generator: torch.Generator | None = None
        if ask.temperature > 0:
            self.generator = torch.Generator()
            if ask.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(ask.seed)
        self._decode = decode
        self._eos = eos_ids
        self._ids: list[int] = []
        self._tokens = 0
        self._sent = 0
        self.reason: str | None = None

    @property
    def done(self) -> bool:
        """Finished, or no longer wanted."""
        return self.reason is not None or self.job.cancelled

    def advance(self, token: int) -> None:
        """Take the row's next token (after ``done``, generate pads: ignored)."""
        if self.done:
            return
        if self.matcher is not None:
            self.matcher.accept(token)
        self._tokens += 1
        if token in self._eos:
            self._finish("stop", self._decode(self._ids))
            return
        self._ids.append(token)
        text = self._decode(self._ids)
        cut = _first_stop(text, self.job.ask.stops)
        if cut is not None:
            self._finish("stop", text[:cut])
        elif len(self._ids) >= self.limit:
            self._finish("length", text)
        else:
            self._release(text[: _settled(text, self.job.ask.stops)])

    def end(self) -> None:
        """Generation is over: a row still open (``generate`` stopped on a limit of its own)
        ran out of room, and its request must not wait for ever."""
        if not self.done:
            self._finish("length", self._decode(self._ids))

    def _release(self, text: str) -> None:
        if len(text) > self._sent:
            self.job.send(Text(text[self._sent :]))
            self._sent = len(text)

    def _finish(self, reason: str, text: str) -> None:
        self._release(text)
        self.reason = reason
        self.job.send(Finished(reason=reason, completion_tokens=self._tokens))


class RowsStop(transformers.StoppingCriteria):
    """Feeds each row its new token and tells ``generate`` which rows are done."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        for row, token in zip(self._rows, input_ids[:, -1].tolist(), strict=True):
            row.advance(int(token))
        return torch.tensor([r.done for r in self._rows], device=input_ids.device)


class RowsConstrain(transformers.LogitsProcessor):
    """Masks, for every row held to a grammar, the tokens its grammar does not allow next;
    it runs before :class:`RowsSample`, so sampled and greedy rows alike stay valid."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for index, row in enumerate(self._rows):
            if row.matcher is not None and not row.done:
                row.matcher.restrict(scores[index])
        return scores


class RowsSample(transformers.LogitsProcessor):
    """Samples the next token of every sampling row with its own temperature, top_p and
    generator, and leaves only that token for ``generate``'s greedy pick; greedy rows pass
    untouched. A seeded request so draws the same tokens whatever it is batched with."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for index, row in enumerate(self._rows):
            if row.generator is None or row.done:
                continue
            token = _draw(
                scores[index],
                temperature=row.job.ask.temperature,
                top_p=row.job.ask.top_p,
                generator=row.generator,
            )
            scores[index] = -torch.inf
            scores[index, token] = 0.0
        return scores


def left_pad(rows: Sequence[Sequence[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left, so every row's answer starts right after its prompt."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


def _draw(
    logits: torch.Tensor, *, temperature: float, top_p: float, generator: torch.Generator
) -> int:
    """Sample from ``softmax(logits / temperature)`` kept to its top-``top_p`` mass."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    ordered, order = probs.sort(descending=True)
    # A token stays while the mass before it is under top_p (so the likeliest always stays).
    ordered = ordered * ((ordered.cumsum(0) - ordered) < top_p)
    pick = torch.multinomial(ordered, 1, generator=generator)
    return int(order[pick])


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _settled(text: str, stops: Sequence[str]) -> int:
    """How much of ``text`` can be sent: not an unfinished character (decoded as U+FFFD),
    nor an ending that a stop string could still complete."""
    end = len(text.rstrip("\ufffd"))
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, end), held, -1):
            if text.endswith(stop[:size], 0, end):
                held = size
                break
    return end - held
