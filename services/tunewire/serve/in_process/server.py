"""The in-process backend itself: the Backend protocol over one worker thread and its queue.

Requests are checked with the shared request parser, prompted exactly as the trainer taught
the model, and queued; one worker thread takes whatever has queued up and generates it as
one batch (the event loop never waits on the model), then hands each answer back to its
request's event loop, where it is worded as OpenAI's and vLLM's APIs word it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pathlib
import queue
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import torch

from tunewire.core.base import errors, store
from tunewire.serve import backend, openai_request, openai_response
from tunewire.serve.in_process import engine as engines
from tunewire.serve.in_process import generation
from tunewire.workloads import constraints, failures, models

log = logging.getLogger(__name__)

_DEFAULT_MAX_TOKENS = 64
_BATCH_WAIT_S = 0.005
"""How long the first request of a batch waits for companions: little next to one token."""


class InProcessBackend:
    """A base model and up to ``max_adapters`` LoRA adapters, served from this process."""

    def __init__(
        self,
        *,
        base_model: str,
        artifacts: store.ArtifactStore | None,
        cache_dir: pathlib.Path,
        max_adapters: int = 8,
        served_base_name: str | None = None,
        max_batch: int = 8,
        threads: int = 0,
    ) -> None:
        """``base_model`` is named as an objective names it (``builtin://``, ``s3://``, a
        directory or a hub id); requests reach it as ``served_base_name`` (default: the same
        string). ``threads`` sets torch's CPU threads for the process; 0 keeps torch's
        default (one per core)."""
        self._base_ref = base_model
        self._served_base = served_base_name or base_model
        self._artifacts = artifacts
        self._cache_dir = cache_dir
        self._max_adapters = max_adapters
        self._max_batch = max_batch
        self._threads = threads
        self._start_lock = threading.Lock()
        self._jobs: queue.Queue[generation.Job | None] = queue.Queue()
        self._engine: engines.Engine | None = None
        self._worker: threading.Thread | None = None
        self._load_failure: str | None = None
        self._closed = False

    @property
    def base_model(self) -> str:
        """The name a request uses to reach the base model without an adapter."""
        return self._served_base

    @property
    def max_adapters(self) -> int:
        """How many adapters may be loaded at once."""
        return self._max_adapters

    async def start(self) -> None:
        """Load the base model now rather than on the first request (once; later calls return
        at once). :class:`errors.Unavailable` says why it cannot be loaded."""
        if self._engine is None or self._closed:
            await asyncio.to_thread(self._start)

    async def check(self) -> None:
        """Return when the base model is loaded and the worker runs; raise
        :class:`errors.Unavailable` otherwise (readiness: a replica still loading takes no
        traffic)."""
        if self._closed:
            raise errors.Unavailable("the in-process model server is closed")
        if self._engine is None:
            why = f": {self._load_failure}" if self._load_failure else " yet"
            raise errors.Unavailable(f"the base model {self._base_ref} is not loaded{why}")
        if self._worker is None or not self._worker.is_alive():
            raise errors.Unavailable("the in-process model server's worker thread has stopped")

    async def load_adapter(self, name: str, path: pathlib.Path) -> None:
        """Load the peft adapter in ``path`` as ``name``; a name already loaded is kept as it
        is. :class:`backend.AdapterLoadError` leaves the model exactly as it was."""
        await self.start()
        await asyncio.to_thread(self._load_adapter, name, path)

    async def unload_adapter(self, name: str) -> None:
        """Unload an adapter; a name not loaded is not an error."""
        if self._engine is not None:
            await asyncio.to_thread(self._unload_adapter, name)

    async def loaded_adapters(self) -> set[str]:
        """Names of the adapters on the model now."""
        engine = self._engine
        return set() if engine is None else engine.adapters()

    async def complete(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> dict[str, Any]:
        """Answer one chat or completions request with ``target`` (an adapter or the base)."""
        job, _ = await self._submit(endpoint, body, target=target)
        pieces: list[str] = []
        try:
            while not isinstance(event := await job.receive(), generation.Finished):
                if isinstance(event, generation.Text):
                    pieces.append(event.text)
        finally:
            job.cancelled = True
        return _answer(job, endpoint).body(
            "".join(pieces), finish_reason=event.reason, usage=_usage(job, event)
        )

    async def stream(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> AsyncGenerator[bytes, None]:
        """Answer a request as Server-Sent Events, chunk by chunk as OpenAI streams them.

        The first event is sent once generation has started, so a request that cannot be
        served fails before it, as :meth:`complete` would.
        """
        job, request = await self._submit(endpoint, body, target=target)
        events = openai_response.Stream(_answer(job, endpoint), include_usage=request.include_usage)
        try:
            while not isinstance(item := await job.receive(), generation.Finished):
                if isinstance(item, generation.Started):
                    for opening in events.opening():
                        yield opening
                else:
                    yield events.text(item.text)
        finally:
            job.cancelled = True  # also when the client leaves: its row stops generating
        for closing in events.closing(item.reason, _usage(job, item)):
            yield closing

    async def classify(
        self, messages: Sequence[dict[str, str]], labels: Sequence[str], *, target: str
    ) -> backend.Choice:
        """The likeliest label by the scores the evaluator used; every label's probability
        (a softmax over the labels' log-likelihoods)."""
        await self.start()
        engine = self._running()
        logprobs = await asyncio.to_thread(
            engine.label_scores, messages, labels, target=target, served_base=self._served_base
        )
        probabilities = torch.softmax(torch.tensor(logprobs), dim=0).tolist()
        best = max(range(len(labels)), key=lambda i: (logprobs[i], -i))
        return backend.Choice(
            label=labels[best], scores=dict(zip(labels, probabilities, strict=True))
        )

    async def close(self) -> None:
        """Stop the worker (queued requests are refused as unavailable) and drop the model."""
        self._closed = True
        worker = self._worker
        if worker is not None:
            self._jobs.put(None)
            await asyncio.to_thread(worker.join)
        self._refuse_queued()
        self._engine = None
        self._worker = None

    # -- the worker side ------------------------------------------------------------------

    def _start(self) -> None:
        with self._start_lock:
            if self._closed:
                raise errors.Unavailable("the in-process model server is closed")
            if self._engine is not None:
                return
            if self._threads:
                torch.set_num_threads(self._threads)
            try:
                loaded = models.load(
                    self._base_ref, artifacts=self._artifacts, cache_dir=self._cache_dir
                )
            except failures.WorkloadError as exc:
                self._load_failure = exc.message
                raise errors.Unavailable(
                    f"the base model {self._base_ref} cannot be loaded: {exc.message}"
                ) from exc
            self._load_failure = None
            self._engine = engines.Engine(loaded)
            self._worker = threading.Thread(
                target=self._work, args=(self._engine,), name="tunewire-serve-generate", daemon=True
            )
            self._worker.start()
            log.info("loaded base model %s, served as %r", self._base_ref, self._served_base)

    def _load_adapter(self, name: str, path: pathlib.Path) -> None:
        if "." in name or name in (self._served_base, engines.BASE_ROW) or not name:
            raise errors.InvalidRequest(
                f"{name!r} cannot name an adapter: it must be non-empty, without '.', and "
                f"differ from the base model's name {self._served_base!r} and "
                f"{engines.BASE_ROW!r}"
            )
        engine = self._running()
        with engine.lock:
            loaded = engine.adapters()
            if name in loaded:
                return
            if len(loaded) >= self._max_adapters:
                raise errors.Conflict(
                    f"{len(loaded)} adapters are loaded, the most this server holds; unload "
                    f"one before loading {name!r}, or raise max_adapters"
                )
            engine.add(name, path)
        log.info("loaded adapter %s from %s", name, path)

    def _unload_adapter(self, name: str) -> None:
        engine = self._running()
        with engine.lock:
            removed = engine.remove(name)
        if removed:
            log.info("unloaded adapter %s", name)

    def _running(self) -> engines.Engine:
        engine = self._engine
        if engine is None or self._closed:
            raise errors.Unavailable("the in-process model server is not running")
        return engine

    def _work(self, engine: engines.Engine) -> None:
        """The worker thread: take the queued requests, generate them as one batch, repeat."""
        while (first := self._jobs.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + _BATCH_WAIT_S
            while len(batch) < self._max_batch:
                try:
                    job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:  # closing: answer this batch, then stop
                    self._jobs.put(None)
                    break
                batch.append(job)
            try:
                engine.generate(batch, served_base=self._served_base)
            except Exception as exc:  # the worker must outlive any one batch
                log.exception("generation failed for a batch of %d", len(batch))
                failure = openai_response.refusal(500, f"generation failed: {exc}")
                for job in batch:
                    job.send(generation.Failed(failure))
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                failure = errors.Unavailable("the in-process model server is closing")
                job.send(generation.Failed(failure))

    # -- the request side -----------------------------------------------------------------

    async def _submit(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> tuple[generation.Job, openai_request.OpenAIRequest]:
        await self.start()
        engine = self._running()
        if target != self._served_base and target not in engine.adapters():
            raise openai_response.model_not_found(target)
        try:
            request = openai_request.parse(endpoint, body | {"model": target})
        except openai_request.RequestError as refused:
            raise openai_response.refusal(
                refused.status, refused.message, param=refused.param
            ) from None
        _refuse_unsupported(body, request)
        job = generation.Job(
            target=target, ask=_ask(request, engine), loop=asyncio.get_running_loop()
        )
        self._jobs.put(job)
        return job, request


def resident_bytes(server: InProcessBackend) -> int:
    """Bytes held by the loaded model's parameters and buffers, adapters included.

    What the benchmark compares between one adapter and many: a tensor shared by two
    modules (tied embeddings) counts once. :class:`errors.Unavailable` before loading.
    """
    engine = server._running()
    tensors = {id(t): t for t in itertools.chain(engine.model.parameters(), engine.model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


_VLLM_ONLY = (
    "logprobs", "top_logprobs", "echo", "suffix", "logit_bias", "top_k", "min_p",
    "repetition_penalty", "presence_penalty", "frequency_penalty",
)  # fmt: skip
"""Parameters the in-process backend cannot honour; a request that sets one is refused
rather than answered as if it had not."""


def _refuse_unsupported(body: dict[str, Any], request: openai_request.OpenAIRequest) -> None:
    """An OpenAI 400 for what only vLLM does: sampling extras, logprobs, calling tools."""
    for name in _VLLM_ONLY:
        if body.get(name) not in (None, False):
            raise openai_response.refusal(
                400, f"`{name}` needs the vLLM backend; the in-process model ignores it", param=name
            )
    if request.tool_choice not in (None, "none", "auto"):
        raise openai_response.refusal(
            400,
            "the in-process model cannot call tools: send tool_choice auto or none (it answers "
            "in text), or use the vLLM backend",
            param="tool_choice",
        )


def _ask(request: openai_request.OpenAIRequest, engine: engines.Engine) -> generation.Ask:
    """What to generate for a checked request; refusals are OpenAI 400 bodies.

    Only ``n=1`` is served. A prompt that leaves no room in the model's context is refused;
    a ``max_tokens`` beyond the room left is cut to it and the answer ends with ``length``.
    """
    if request.n != 1:
        raise openai_response.refusal(400, "only n=1 is supported", param="n")
    prompt = engine.prompt_ids(request)
    if not prompt:
        raise openai_response.refusal(400, "the prompt is empty", param=request.prompt_param)
    if len(prompt) >= engine.context:
        raise openai_response.refusal(
            400,
            f"This model's maximum context length is {engine.context} tokens. However, your "
            f"prompt has {len(prompt)} tokens, which leaves no room for an answer. Please "
            "shorten the prompt.",
            param=request.prompt_param,
        )
    return generation.Ask(
        prompt=prompt,
        max_tokens=_DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens,
        stops=request.stop,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        grammar=_grammar(request.response_format),
    )


def _grammar(response_format: openai_request.ResponseFormat) -> str | None:
    """The grammar an answer must follow; None for free text. A schema llguidance cannot
    compile is an OpenAI 400 naming ``response_format``."""
    if response_format.type == "text":
        return None
    if response_format.type == "choice":
        return constraints.choice_grammar(response_format.choices)
    try:
        return constraints.json_schema_grammar(response_format.schema or constraints.ANY_OBJECT)
    except constraints.UnusableSchema as exc:
        raise openai_response.refusal(
            400, f"the JSON schema cannot be used: {exc}", param="response_format"
        ) from None


def _answer(job: generation.Job, endpoint: backend.Endpoint) -> openai_response.Answer:
    return openai_response.Answer(
        endpoint=endpoint, key=job.id, created=job.created, model=job.target
    )


def _usage(job: generation.Job, finished: generation.Finished) -> dict[str, int]:
    return openai_response.usage(len(job.ask.prompt), finished.completion_tokens)
