"""The in-process serving backend: one base model and its LoRA adapters, in this process.

Where there is no GPU (the embedded stack, the tests) the serve service runs the base model
itself with transformers and keeps the approved adapters loaded on it with peft. An adapter
adds only its low-rank weights, so ten cost little more memory than one, and peft's
mixed-adapter forward lets one ``generate`` call answer rows for different adapters (and the
base) together: requests that arrive together share a batch whatever model they name.

A request is prompted exactly as the trainer taught the model (:func:`data.prompt_ids`),
generated on one worker thread (the event loop never waits on the model), and answered in
the shapes of OpenAI's and vLLM's chat and completions APIs. Sampling, stop strings and
token limits apply per row, so an answer does not depend on the requests it was batched with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import pathlib
import queue
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import peft
import torch
import transformers

from tunewire.core.base import errors, store
from tunewire.serve import backend
from tunewire.workloads import data, failures, models

log = logging.getLogger(__name__)

_BASE_ROW = "__base__"
"""peft's name, in a mixed-adapter batch, for a row that uses no adapter."""
_DEFAULT_MAX_TOKENS = 64
_BATCH_WAIT_S = 0.005
"""How long the first request of a batch waits for companions: little next to one token."""
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


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
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._engine: _Engine | None = None
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
        job = await self._submit(endpoint, body, target=target)
        pieces: list[str] = []
        try:
            while not isinstance(event := await job.receive(), _Finished):
                if isinstance(event, _Text):
                    pieces.append(event.text)
        finally:
            job.cancelled = True
        text = "".join(pieces)
        choice: dict[str, Any] = {"index": 0}
        if endpoint == "chat/completions":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice |= {"logprobs": None, "finish_reason": event.reason}
        return {
            **_header(job, endpoint, chunk=False),
            "choices": [choice],
            "usage": _usage(job, event),
        }

    async def stream(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> AsyncGenerator[bytes, None]:
        """Answer a request as Server-Sent Events, chunk by chunk as OpenAI streams them.

        The first event is sent once generation has started, so a request that cannot be
        served fails before it, as :meth:`complete` would.
        """
        job = await self._submit(endpoint, body, target=target)
        chat = endpoint == "chat/completions"
        usage_chunks = _include_usage(body)
        header = _header(job, endpoint, chunk=True)

        def event(choice: dict[str, Any]) -> bytes:
            chunk: dict[str, Any] = {**header, "choices": [{"index": 0, **choice}]}
            if usage_chunks:
                chunk["usage"] = None
            return _sse(chunk)

        try:
            while not isinstance(item := await job.receive(), _Finished):
                if isinstance(item, _Started):
                    if chat:
                        delta = {"role": "assistant", "content": ""}
                        yield event({"delta": delta, "logprobs": None, "finish_reason": None})
                else:
                    piece = {"delta": {"content": item.text}} if chat else {"text": item.text}
                    yield event({**piece, "logprobs": None, "finish_reason": None})
        finally:
            job.cancelled = True  # also when the client leaves: its row stops generating
        last: dict[str, Any] = {"delta": {}} if chat else {"text": ""}
        yield event({**last, "logprobs": None, "finish_reason": item.reason})
        if usage_chunks:
            yield _sse({**header, "choices": [], "usage": _usage(job, item)})
        yield b"data: [DONE]\n\n"

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
            self._engine = _Engine(loaded)
            self._worker = threading.Thread(
                target=self._work, args=(self._engine,), name="tunewire-serve-generate", daemon=True
            )
            self._worker.start()
            log.info("loaded base model %s, served as %r", self._base_ref, self._served_base)

    def _load_adapter(self, name: str, path: pathlib.Path) -> None:
        if "." in name or name in (self._served_base, _BASE_ROW) or not name:
            raise errors.InvalidRequest(
                f"{name!r} cannot name an adapter: it must be non-empty, without '.', and "
                f"differ from the base model's name {self._served_base!r} and {_BASE_ROW!r}"
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

    def _running(self) -> _Engine:
        engine = self._engine
        if engine is None or self._closed:
            raise errors.Unavailable("the in-process model server is not running")
        return engine

    def _work(self, engine: _Engine) -> None:
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
                failure = _refusal(500, f"generation failed: {exc}", kind="InternalServerError")
                for job in batch:
                    job.send(_Failed(failure))
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.send(_Failed(errors.Unavailable("the in-process model server is closing")))

    # -- the request side -----------------------------------------------------------------

    async def _submit(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> _Job:
        await self.start()
        engine = self._running()
        if target != self._served_base and target not in engine.adapters():
            raise _not_found(target)
        with engine.tokenizer_lock:
            ask = _parse(endpoint, body, engine)
        job = _Job(target=target, ask=ask, loop=asyncio.get_running_loop())
        self._jobs.put(job)
        return job


def resident_bytes(server: InProcessBackend) -> int:
    """Bytes held by the loaded model's parameters and buffers, adapters included.

    What the benchmark compares between one adapter and many: a tensor shared by two
    modules (tied embeddings) counts once. :class:`errors.Unavailable` before loading.
    """
    engine = server._running()
    tensors = {id(t): t for t in itertools.chain(engine.model.parameters(), engine.model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


# -- the model ----------------------------------------------------------------------------


class _Engine:
    """The base model, the peft wrapper once an adapter is on it, and batched generation.

    Adding and removing adapters happen with :attr:`lock` held; :meth:`generate` takes it.
    """

    def __init__(self, loaded: models.Loaded) -> None:
        self.base = loaded.model
        self.tokenizer = loaded.tokenizer
        self.peft_model: peft.PeftModel | None = None
        self._names: frozenset[str] = frozenset()
        """The adapters fully loaded; replaced whole, so readers never see one half-loaded."""
        self.lock = threading.Lock()
        """Held while the model changes (adapters in or out) and while it generates."""
        self.tokenizer_lock = threading.Lock()
        """A fast tokenizer may refuse to be used by two threads at once."""
        config = self.base.config
        self.context = int(
            getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        )
        self.pad_id = int(self.tokenizer.pad_token_id)
        eos = self.base.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = frozenset(
            int(i) for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None
        )
        # The model's own sampling defaults (a hub model's temperature, top_p) must not leak
        # into requests: each request's sampling is applied per row by _RowsSample.
        self.base.generation_config = transformers.GenerationConfig(  # type: ignore[no-untyped-call]
            pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids), do_sample=False
        )

    @property
    def model(self) -> torch.nn.Module:
        return self.peft_model if self.peft_model is not None else self.base

    def adapters(self) -> set[str]:
        return set(self._names)

    def add(self, name: str, path: pathlib.Path) -> None:
        """Load an adapter; on any failure, take back every change the attempt made."""
        _check_files(name, path)
        device = str(next(self.base.parameters()).device)
        wrapped = self.peft_model
        try:
            config = peft.PeftConfig.from_pretrained(str(path))
            _check_kind(config, path)
            if wrapped is None:
                config.inference_mode = True
                wrapped = peft.PeftModelForCausalLM(self.base, config, adapter_name=name)
            result = wrapped.load_adapter(str(path), adapter_name=name, torch_device=device)
            _check_keys(result, name=name, path=path)
        except backend.AdapterLoadError:
            self._take_back(wrapped, name)
            raise
        except Exception as exc:
            self._take_back(wrapped, name)
            raise backend.AdapterLoadError(
                f"cannot load adapter {name!r} from {path}: {type(exc).__name__}: {exc}; "
                "check that the directory holds a LoRA adapter trained on this base model "
                "and that its files are whole (copy them again from the artifact store)"
            ) from exc
        self.peft_model = wrapped
        self._names = self._names | {name}

    def remove(self, name: str) -> bool:
        """Delete an adapter if it is loaded; the last one out unwraps the base model."""
        wrapped = self.peft_model
        if wrapped is None or name not in self._names:
            return False
        self._names = self._names - {name}
        others = [n for n in wrapped.peft_config if n != name]
        if others:
            # peft warns when the active adapter goes; requests name theirs on every call.
            wrapped.set_adapter(others[0], inference_mode=True)
        wrapped.delete_adapter(name)
        if not others:
            self._unwrap()
        return True

    def _take_back(self, wrapped: peft.PeftModel | None, name: str) -> None:
        if wrapped is not None and name in wrapped.peft_config:
            wrapped.delete_adapter(name)
        for module in self.base.modules():
            if isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
                module.delete_adapter(name)
        if self.peft_model is None:
            self._unwrap()
        else:
            _strip_empty_layers(self.base)

    def _unwrap(self) -> None:
        _strip_empty_layers(self.base)
        if "peft_config" in vars(self.base):
            del self.base.peft_config
        self.peft_model = None

    def generate(self, jobs: Sequence[_Job], *, served_base: str) -> None:
        """Answer ``jobs`` with one ``generate`` call, each row with its own adapter."""
        with self.lock:
            adapters = self.adapters()
            rows: list[_Row] = []
            for job in jobs:
                if job.cancelled:
                    continue
                if job.target != served_base and job.target not in adapters:
                    job.send(_Failed(_not_found(job.target)))
                    continue
                rows.append(_Row(job, engine=self))
            if not rows:
                return
            self._generate(rows, served_base=served_base)

    def _generate(self, rows: list[_Row], *, served_base: str) -> None:
        input_ids, attention_mask = _left_pad([r.job.ask.prompt for r in rows], pad_id=self.pad_id)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "max_new_tokens": max(r.limit for r in rows),
            "do_sample": False,
            "stopping_criteria": transformers.StoppingCriteriaList([_RowsStop(rows)]),
        }
        if any(r.generator is not None for r in rows):
            kwargs["logits_processor"] = transformers.LogitsProcessorList([_RowsSample(rows)])
        if self.peft_model is not None:
            kwargs["adapter_names"] = [
                _BASE_ROW if r.job.target == served_base else r.job.target for r in rows
            ]
        log.debug(
            "generating a batch of %d rows for %s",
            len(rows),
            sorted({r.job.target for r in rows}),
            extra={"count": len(rows)},
        )
        for row in rows:
            row.job.send(_Started())
        with torch.inference_mode():
            self.model.generate(**kwargs)  # type: ignore[operator]
        for row in rows:
            row.end()

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens (end of turn) left out."""
        with self.tokenizer_lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))


def _check_files(name: str, path: pathlib.Path) -> None:
    """Refuse a directory without an adapter before peft would look for it on the hub."""
    if not (path / "adapter_config.json").is_file():
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r}: {path / 'adapter_config.json'} does not exist; "
            "sync the adapter's files from the artifact store into that directory"
        )
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r}: {path} holds no {' or '.join(_WEIGHT_FILES)}; "
            "sync the adapter's files from the artifact store into that directory"
        )


def _check_kind(config: Any, path: pathlib.Path) -> None:
    if config.peft_type != peft.PeftType.LORA:
        raise backend.AdapterLoadError(
            f"{path} holds a {config.peft_type} adapter; only LoRA adapters are served"
        )


def _check_keys(result: Any, *, name: str, path: pathlib.Path) -> None:
    """Weights that fit none of the adapter's layers, or layers left without weights, mean
    the adapter was trained on another model; peft would only warn."""
    # peft's own filter matches the name anywhere in a key; a key segment is exact, and a
    # module name can never contain a dot.
    missing = [k for k in result.missing_keys if f".{name}." in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        detail = (
            f"{len(missing)} weights missing (e.g. {missing[:2]})"
            if missing
            else f"{len(unexpected)} weights fit no layer (e.g. {unexpected[:2]})"
        )
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r} from {path}: {detail}; it was trained on another "
            "base model, so train it again on this one"
        )


def _strip_empty_layers(model: torch.nn.Module) -> None:
    """Put back the original module wherever a peft layer no longer holds any adapter."""
    for qualified, module in list(model.named_modules()):
        if not isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
            continue
        if any(len(getattr(module, n)) for n in module.adapter_layer_names):
            continue
        parent_name, _, child = qualified.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())


def _left_pad(rows: Sequence[Sequence[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts padded on the left, so every row's answer starts right after its prompt."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids, mask


# -- one request's generation -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Ask:
    """A request, checked: the prompt's token ids and how to answer it."""

    prompt: list[int]
    max_tokens: int
    stops: tuple[str, ...]
    temperature: float
    top_p: float
    seed: int | None


@dataclasses.dataclass(frozen=True)
class _Started:
    """The request's batch has begun generating."""


@dataclasses.dataclass(frozen=True)
class _Text:
    text: str


@dataclasses.dataclass(frozen=True)
class _Finished:
    reason: str
    """``stop`` (end of turn or a stop string) or ``length`` (the token limit)."""
    completion_tokens: int


@dataclasses.dataclass(frozen=True)
class _Failed:
    error: Exception


_Event = _Started | _Text | _Finished | _Failed


@dataclasses.dataclass(eq=False)
class _Job:
    """A request on its way through the worker, and the way back to its event loop."""

    target: str
    ask: _Ask
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False
    """Set when nobody waits for the answer any more; its row stops at the next token."""
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))
    inbox: asyncio.Queue[_Event] = dataclasses.field(default_factory=asyncio.Queue)

    async def receive(self) -> _Started | _Text | _Finished:
        """The next event from the worker; a failure is raised."""
        event = await self.inbox.get()
        if isinstance(event, _Failed):
            raise event.error
        return event

    def send(self, event: _Event) -> None:
        """Hand an event to the request's event loop (called from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.inbox.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening
            self.cancelled = True


class _Row:
    """One request's answer as it is generated: text is released once no stop string can
    still claim it, and the row ends at end of turn, a stop string or its token limit."""

    def __init__(self, job: _Job, *, engine: _Engine) -> None:
        self.job = job
        ask = job.ask
        self.limit = min(ask.max_tokens, engine.context - len(ask.prompt))
        self.generator: torch.Generator | None = None
        if ask.temperature > 0:
            self.generator = torch.Generator()
            if ask.seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(ask.seed)
        self._decode: Callable[[list[int]], str] = engine.decode
        self._eos = engine.eos_ids
        self._ids: list[int] = []
        self._tokens = 0
        self._sent = 0
        self.reason: str | None = None

    @property
    def done(self) -> bool:
        return self.reason is not None or self.job.cancelled

    def advance(self, token: int) -> None:
        """Take the row's next token (after ``done``, generate pads: ignored)."""
        if self.done:
            return
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
            self.job.send(_Text(text[self._sent :]))
            self._sent = len(text)

    def _finish(self, reason: str, text: str) -> None:
        self._release(text)
        self.reason = reason
        self.job.send(_Finished(reason=reason, completion_tokens=self._tokens))


class _RowsStop(transformers.StoppingCriteria):
    """Feeds each row its new token and tells ``generate`` which rows are done."""

    def __init__(self, rows: list[_Row]) -> None:
        self._rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        for row, token in zip(self._rows, input_ids[:, -1].tolist(), strict=True):
            row.advance(int(token))
        return torch.tensor([r.done for r in self._rows], device=input_ids.device)


class _RowsSample(transformers.LogitsProcessor):
    """Samples the next token of every sampling row with its own temperature, top_p and
    generator, and leaves only that token for ``generate``'s greedy pick; greedy rows pass
    untouched. A seeded request so draws the same tokens whatever it is batched with."""

    def __init__(self, rows: list[_Row]) -> None:
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


# -- requests and answers -----------------------------------------------------------------


def _parse(endpoint: backend.Endpoint, body: dict[str, Any], engine: _Engine) -> _Ask:
    """Check a request's fields and encode its prompt; refusals are OpenAI 400 bodies.

    Read as OpenAI reads them: ``messages`` (chat) or ``prompt`` (a string or a list of one),
    ``max_tokens`` (or ``max_completion_tokens``; 64 when neither is given), ``temperature``
    (1 by default; 0 is greedy), ``top_p``, ``seed``, ``stop`` and ``n`` (1 only). Other
    fields (``stream`` among them) are the caller's business. A prompt that leaves no room
    in the model's context is refused; a ``max_tokens`` beyond the room left is cut to it
    and the answer ends with ``length``.
    """
    n = body.get("n")
    if n not in (None, 1):
        raise _bad_request("only n=1 is supported", param="n")
    if endpoint == "chat/completions":
        prompt = data.prompt_ids(engine.tokenizer, _messages(body.get("messages")))
        param = "messages"
    else:
        prompt = _prompt_ids(engine.tokenizer, body.get("prompt"))
        param = "prompt"
    if not prompt:
        raise _bad_request("the prompt is empty", param=param)
    if len(prompt) >= engine.context:
        raise _bad_request(
            f"This model's maximum context length is {engine.context} tokens. However, your "
            f"prompt has {len(prompt)} tokens, which leaves no room for an answer. Please "
            "shorten the prompt.",
            param=param,
        )
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = _DEFAULT_MAX_TOKENS
    if not _is_int(max_tokens) or max_tokens < 1:
        raise _bad_request("max_tokens must be a positive integer", param="max_tokens")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if not _is_number(temperature) or temperature < 0:
        raise _bad_request("temperature must be a number >= 0", param="temperature")
    top_p = body.get("top_p")
    top_p = 1.0 if top_p is None else top_p
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise _bad_request("top_p must be a number in (0, 1]", param="top_p")
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise _bad_request("seed must be an integer", param="seed")
    return _Ask(
        prompt=prompt,
        max_tokens=int(max_tokens),
        stops=_stops(body.get("stop")),
        temperature=float(temperature),
        top_p=float(top_p),
        seed=seed,
    )


def _messages(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _bad_request("messages must be a non-empty list", param="messages")
    turns = []
    for message in value:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad_request("each message needs a string role", param="messages")
        turns.append({"role": message["role"], "content": _content(message.get("content"))})
    return turns


def _content(value: Any) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise _bad_request("a message's content must be text", param="messages")


def _prompt_ids(tokenizer: Any, value: Any) -> list[int]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, str):
        raise _bad_request("prompt must be a string (or a list of one string)", param="prompt")
    ids: list[int] = tokenizer(value)["input_ids"]
    return ids


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _bad_request("stop must be a string or a list of strings", param="stop")
    return tuple(s for s in value if s)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _header(job: _Job, endpoint: backend.Endpoint, *, chunk: bool) -> dict[str, Any]:
    if endpoint == "chat/completions":
        ident, kind = f"chatcmpl-{job.id}", "chat.completion.chunk" if chunk else "chat.completion"
    else:
        ident, kind = f"cmpl-{job.id}", "text_completion"
    return {"id": ident, "object": kind, "created": job.created, "model": job.target}


def _usage(job: _Job, finished: _Finished) -> dict[str, int]:
    prompt = len(job.ask.prompt)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": finished.completion_tokens,
        "total_tokens": prompt + finished.completion_tokens,
    }


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _refusal(
    status: int, message: str, *, kind: str, param: str | None = None
) -> backend.UpstreamError:
    """An error as vLLM's OpenAI server words it."""
    body: dict[str, Any] = {"object": "error", "message": message, "type": kind, "code": status}
    if param is not None:
        body["param"] = param
    return backend.UpstreamError(status, body)


def _bad_request(message: str, *, param: str) -> backend.UpstreamError:
    return _refusal(400, message, kind="BadRequestError", param=param)


def _not_found(target: str) -> backend.UpstreamError:
    return _refusal(404, f"The model `{target}` does not exist.", kind="NotFoundError")
