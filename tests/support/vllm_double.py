"""A test double of vLLM's OpenAI-compatible server with runtime LoRA updating.

vLLM needs a GPU, so the tests of :mod:`tunewire.serve.vllm_server` talk to this double
instead: a real HTTP server (FastAPI under uvicorn, on a free port, in a background thread)
that answers with vLLM's documented request and response shapes and status codes. It
generates no text: every answer is ``answer from <model>``, so a test sees which model
(adapter or base) served it.

Based on vLLM's main branch as read in November 2026 (commits 00153c8, 27873ca, 055e47c,
00bd149): ``vllm/entrypoints/openai/models/serving.py`` (OpenAIServingModels: ``/v1/models``,
load and unload), ``vllm/entrypoints/serve/lora/api_router.py`` (the routes exist only with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``; success is a plain-text 200),
``vllm/entrypoints/openai/engine/serving.py`` (``_check_model``),
``vllm/entrypoints/serve/exception_handling/`` (error bodies; validation errors are 400),
``vllm/entrypoints/serve/instrumentator/health.py``, ``vllm/exceptions.py``
(LoRAAdapterNotFoundError) and ``vllm/lora/worker_manager.py`` (the LRU CPU cache); and on
the 0.8 to 0.10 releases' ``vllm/entrypoints/openai/serving_models.py`` for what changed. What
it models:

- ``GET /health``: 200 with an empty body; 503 once :meth:`VllmDouble.kill_engine` is called
  (vLLM's EngineDeadError), when every other route answers 500.
- ``GET /v1/models``: the base model (``root`` its path, ``parent`` null) and each loaded
  adapter (``root`` its path, ``parent`` the base model).
- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``: a missing field is a
  validation error (400); an empty one 400 "Both 'lora_name' and 'lora_path' must be
  provided."; a loaded name 400 "The lora adapter '<name>' has already been loaded. ...";
  a path without ``adapter_config.json`` 404 "Loading lora <name> failed: No adapter found
  for <path>"; no weights file, a config that is not JSON, or a rank above
  ``max_lora_rank`` 400 (``adapter_error_status``: some vLLM versions answer 500). Success is
  200 with the text "Success: LoRA adapter '<name>' added successfully.".
- Capacity: vLLM refuses no load for capacity. Its worker keeps at most ``max_cpu_loras``
  (default ``max_loras``) adapters in an LRU cache and evicts the least recently used one;
  an evicted adapter stays listed and is reloaded from its path when a request names it.
  :attr:`VllmDouble.evictions` and :attr:`VllmDouble.reloads` record both.
- ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: an unknown name is 404 "The lora
  adapter '<name>' cannot be found.".
- ``POST /v1/chat/completions`` and ``/v1/completions``: validation errors 400 (missing
  ``messages``, ``stream_options`` without ``stream``, ``max_tokens`` < 1); an unknown model
  404 "The model `<name>` does not exist." with ``param: "model"``; no ``model`` means the
  base model; ``usage`` counts words; ``stream: true`` answers Server-Sent Events, one chunk
  per word, a usage chunk when ``stream_options.include_usage``, then ``data: [DONE]``.
  ``structured_outputs: {"choice": [...]}`` answers one of the choices (the first the
  prompt mentions, else the first), ``response_format`` with a JSON schema an object of its
  required properties (each its first enum value or its type's plain value), and
  ``logprobs: true`` gives each token (word) 0.5.
  ``latency_s`` (default 0) holds every completion that long before its answer starts, as
  a real server's generation would (the double's event loop stays free meanwhile, as
  vLLM's API server does while the GPU works): the benchmark's stand-in for service time.
- Errors use the current nested shape ``{"error": {"message", "type", "param", "code"}}``
  (older releases, such as 0.8, sent it flat, with ``"object": "error"``).
- ``api_key``: routes under ``/v1`` need ``Authorization: Bearer <key>``, else 401
  ``{"error": "Unauthorized"}``; ``/health`` stays open.
- ``runtime_lora_updating=False``: the load and unload routes do not exist (404
  ``{"detail": "Not Found"}``), as when vLLM starts without the variable.

:meth:`VllmDouble.stop` and :meth:`VllmDouble.start` take the server down and up on the same
port; a restart forgets the loaded adapters, as a new vLLM process would. Not modelled:
real generation, sampling parameters other than ``max_tokens``, tool calls, ``n`` > 1,
``load_inplace``, LoRA resolvers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import fastapi
import uvicorn
from fastapi import responses

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
_HOLD_LIMIT_S = 10.0


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the double answered, for a test's assertions."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    """The parsed JSON body; None for a GET or a body that is not JSON."""


@dataclasses.dataclass
class _Adapter:
    name: str
    path: str


class _Refusal(Exception):
    """Ends a handler with one of vLLM's error responses."""

    def __init__(self, status: HTTPStatus, message: str, *, kind: str, param: str | None = None):
        super().__init__(message)
        self.response = _error(status, message, kind=kind, param=param)


def _error(
    status: HTTPStatus, message: str, *, kind: str, param: str | None = None
) -> responses.JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": status.value}}
    return responses.JSONResponse(body, status_code=status.value)


def _invalid(message: str, *, param: str | None = None) -> _Refusal:
    """A request-validation failure: vLLM answers these 400 with type "Bad Request"."""
    return _Refusal(
        HTTPStatus.BAD_REQUEST,
        f"1 validation error:\n  {message}",
        kind=HTTPStatus.BAD_REQUEST.phrase,
        param=param,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _words(value: Any) -> list[str]:
    """The words in a prompt or in messages' text content, for the usage counts."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [word for item in value for word in _words(item)]
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return []


class VllmDouble:
    """A test double of a vLLM server started with ``--enable-lora`` (see the module doc)."""

    def __init__(
        self,
        *,
        base_model: str = "base-model",
        model_path: str = "/models/base-model",
        max_loras: int = 1,
        max_cpu_loras: int | None = None,
        max_lora_rank: int = 16,
        max_model_len: int = 2048,
        runtime_lora_updating: bool = True,
        api_key: str | None = None,
        adapter_error_status: HTTPStatus = HTTPStatus.BAD_REQUEST,
        latency_s: float = 0.0,
    ) -> None:
        self.base_model = base_model
        self.model_path = model_path
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.cpu_capacity = max_cpu_loras or max_loras
        self.runtime_lora_updating = runtime_lora_updating
        self.api_key = api_key
        self.adapter_error_status = adapter_error_status
        self.latency_s = latency_s
        self.port = _free_port()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._adapters: dict[str, _Adapter] = {}
        self._cache: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._evictions: list[str] = []
        self._reloads: list[str] = []
        self._engine_dead = False
        self._gate: threading.Event | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._created = int(time.time())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the test's controls -------------------------------------------------------------

    def start(self) -> None:
        """Serve on :attr:`port`, as a freshly started vLLM: no adapters loaded."""
        with self._lock:
            self._adapters.clear()
            self._cache.clear()
            self._engine_dead = False
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="vllm-double", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM double did not start on port {self.port}")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        """Close the listening socket and every connection: the server is down."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)
        self._server = self._thread = None

    def kill_engine(self) -> None:
        """The engine dies but the API server stays up: /health 503, the rest 500."""
        with self._lock:
            self._engine_dead = True

    def hold_streams(self) -> threading.Event:
        """Make streams pause after their first event until the returned event is set."""
        gate = threading.Event()
        self._gate = gate
        return gate

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def loaded(self) -> dict[str, str]:
        """Adapter name → the path it was loaded from (what /v1/models lists)."""
        with self._lock:
            return {name: adapter.path for name, adapter in self._adapters.items()}

    @property
    def cpu_cache(self) -> list[str]:
        """Adapters in the worker's LRU cache, least recently used first."""
        with self._lock:
            return list(self._cache)

    @property
    def evictions(self) -> list[str]:
        with self._lock:
            return list(self._evictions)

    @property
    def reloads(self) -> list[str]:
        with self._lock:
            return list(self._reloads)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the server ----------------------------------------------------------------------

    def _app(self) -> fastapi.FastAPI:
        app = fastapi.FastAPI(title="vLLM test double", docs_url=None, redoc_url=None)

        @app.middleware("http")
        async def _authenticate(request: fastapi.Request, call_next: Any) -> Any:
            if (
                self.api_key is not None
                and request.url.path.startswith("/v1")
                and request.headers.get("authorization") != f"Bearer {self.api_key}"
            ):
                return responses.JSONResponse({"error": "Unauthorized"}, status_code=401)
            return await call_next(request)

        @app.get("/health")
        async def health(request: fastapi.Request) -> responses.Response:
            await self._record(request)
            return responses.Response(status_code=503 if self._engine_dead else 200)

        @app.get("/metrics")
        async def metrics(request: fastapi.Request) -> responses.Response:
            await self._record(request)
            waiting = f'vllm:num_requests_waiting{{model_name="{self.base_model}"}} 0.0\n'
            return responses.PlainTextResponse(waiting, media_type="text/plain; version=0.0.4")

        @app.get("/v1/models")
        async def models(request: fastapi.Request) -> responses.Response:
            await self._record(request)
            return self._guarded(self._models)

        @app.post("/v1/chat/completions")
        async def chat(request: fastapi.Request) -> responses.Response:
            body = await self._record(request)
            await self._generation_time()
            return self._guarded(lambda: self._generate("chat/completions", request, body))

        @app.post("/v1/completions")
        async def completions(request: fastapi.Request) -> responses.Response:
            body = await self._record(request)
            await self._generation_time()
            return self._guarded(lambda: self._generate("completions", request, body))

        if self.runtime_lora_updating:

            @app.post("/v1/load_lora_adapter")
            async def load(request: fastapi.Request) -> responses.Response:
                body = await self._record(request)
                return self._guarded(lambda: self._load(request, body))

            @app.post("/v1/unload_lora_adapter")
            async def unload(request: fastapi.Request) -> responses.Response:
                body = await self._record(request)
                return self._guarded(lambda: self._unload(request, body))

        return app

    async def _record(self, request: fastapi.Request) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        with self._lock:
            self._requests.append(recorded)
        return body

    async def _generation_time(self) -> None:
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)

    def _guarded(self, handler: Any) -> responses.Response:
        if self._engine_dead:
            return _error(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                kind="InternalServerError",
            )
        try:
            response: responses.Response = handler()
        except _Refusal as refusal:
            return refusal.response
        return response

    def _models(self) -> responses.Response:
        permission = {
            "id": f"modelperm-{uuid.uuid4().hex}",
            "object": "model_permission",
            "created": self._created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }

        def card(name: str, root: str, parent: str | None, length: int | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": self._created,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": length,
                "permission": [permission],
            }

        with self._lock:
            cards = [card(self.base_model, self.model_path, None, self.max_model_len)]
            cards += [card(a.name, a.path, self.base_model, None) for a in self._adapters.values()]
        return responses.JSONResponse({"object": "list", "data": cards})

    @staticmethod
    def _json_body(request: fastapi.Request, body: Any) -> dict[str, Any]:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            raise _invalid("Unsupported Media Type: Only 'application/json' is allowed")
        if not isinstance(body, dict):
            raise _invalid(
                "{'type': 'json_invalid', 'loc': ('body',), 'msg': 'JSON decode error'}",
                param="body",
            )
        return body

    @staticmethod
    def _string_field(body: dict[str, Any], name: str) -> str:
        if name not in body:
            raise _invalid(
                f"{{'type': 'missing', 'loc': ('body', '{name}'), 'msg': 'Field required'}}",
                param=f"body.{name}",
            )
        value = body[name]
        if not isinstance(value, str):
            raise _invalid(
                f"{{'type': 'string_type', 'loc': ('body', '{name}'), "
                "'msg': 'Input should be a valid string'}",
                param=f"body.{name}",
            )
        return value

    def _load(self, request: fastapi.Request, raw: Any) -> responses.Response:
        body = self._json_body(request, raw)
        name = self._string_field(body, "lora_name")
        path = self._string_field(body, "lora_path")
        if not name or not path:
            raise _Refusal(
                HTTPStatus.BAD_REQUEST,
                "Both 'lora_name' and 'lora_path' must be provided.",
                kind="InvalidUserInput",
            )
        with self._lock:
            if name in self._adapters:
                raise _Refusal(
                    HTTPStatus.BAD_REQUEST,
                    f"The lora adapter '{name}' has already been loaded. If you want to load "
                    "the adapter in place, set 'load_inplace' to True.",
                    kind="InvalidUserInput",
                )
        self._check_files(name, path)
        with self._lock:
            self._adapters[name] = _Adapter(name, path)
            self._cache_touch(name)
        return responses.Response(
            f"Success: LoRA adapter '{name}' added successfully.", status_code=200
        )

    def _check_files(self, name: str, path: str) -> None:
        """What vLLM's worker checks when it loads an adapter into its CPU cache."""
        directory = Path(path)
        config_file = directory / "adapter_config.json"
        if not config_file.is_file():
            raise _Refusal(
                HTTPStatus.NOT_FOUND,
                f"Loading lora {name} failed: No adapter found for {path}",
                kind="NotFoundError",
            )
        status = self.adapter_error_status
        kind = "BadRequestError" if status == HTTPStatus.BAD_REQUEST else "InternalServerError"
        try:
            config = json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Refusal(status, f"Expecting value: {exc}", kind=kind) from exc
        rank = config.get("r", 0) if isinstance(config, dict) else 0
        if isinstance(rank, int) and rank > self.max_lora_rank:
            raise _Refusal(
                status,
                f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.",
                kind=kind,
            )
        if not any((directory / weights).is_file() for weights in WEIGHT_FILES):
            raise _Refusal(status, f"{path} doesn't contain tensors", kind=kind)

    def _cache_touch(self, name: str) -> None:
        """Use an adapter: to the back of the LRU cache, evicting the front if full.
        Caller holds the lock."""
        if name in self._cache:
            self._cache.move_to_end(name)
            return
        if len(self._cache) >= self.cpu_capacity:
            evicted, _ = self._cache.popitem(last=False)
            self._evictions.append(evicted)
        self._cache[name] = None

    def _unload(self, request: fastapi.Request, raw: Any) -> responses.Response:
        body = self._json_body(request, raw)
        name = self._string_field(body, "lora_name")
        if not name:
            raise _Refusal(
                HTTPStatus.BAD_REQUEST,
                "'lora_name' needs to be provided to unload a LoRA adapter.",
                kind="InvalidUserInput",
            )
        with self._lock:
            if name not in self._adapters:
                raise _Refusal(
                    HTTPStatus.NOT_FOUND,
                    f"The lora adapter '{name}' cannot be found.",
                    kind="NotFoundError",
                )
            del self._adapters[name]
            self._cache.pop(name, None)
        return responses.Response(
            f"Success: LoRA adapter '{name}' removed successfully.", status_code=200
        )

    def _generate(self, endpoint: str, request: fastapi.Request, raw: Any) -> responses.Response:
        body = self._json_body(request, raw)
        if endpoint == "chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
            ):
                raise _invalid(
                    "{'type': 'missing', 'loc': ('body', 'messages'), 'msg': 'Field required'}",
                    param="body.messages",
                )
            prompt_words = _words(messages)
        else:
            prompt = body.get("prompt")
            if not prompt or not isinstance(prompt, str | list):
                raise _invalid(
                    "Value error, Either prompt or prompt_embeds must be provided and non-empty."
                )
            prompt_words = _words(prompt)
        streaming = bool(body.get("stream"))
        if body.get("stream_options") is not None and not streaming:
            raise _invalid("Value error, Stream options can only be defined when `stream=True`.")
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _invalid(
                f"Value error, max_tokens must be at least 1, got {max_tokens}.",
                param="max_tokens",
            )
        model = body.get("model") or self.base_model
        with self._lock:
            if model != self.base_model:
                if model not in self._adapters:
                    raise _Refusal(
                        HTTPStatus.NOT_FOUND,
                        f"The model `{model}` does not exist.",
                        kind="NotFoundError",
                        param="model",
                    )
                if model not in self._cache:
                    self._reloads.append(model)
                self._cache_touch(model)
        words = f"answer from {model}".split()
        choices = (body.get("structured_outputs") or {}).get("choice")
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        if choices:
            words = [_chosen(choices, prompt_words)]
        elif schema:
            words = [json.dumps(_valid_for(schema), separators=(",", ":"))]
        finish = "stop"
        if max_tokens is not None and max_tokens < len(words):
            words, finish = words[:max_tokens], "length"
        usage = {
            "prompt_tokens": len(prompt_words),
            "total_tokens": len(prompt_words) + len(words),
            "completion_tokens": len(words),
            "prompt_tokens_details": None,
        }
        chat = endpoint == "chat/completions"
        answer_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if streaming:
            options = body.get("stream_options") or {}
            return responses.StreamingResponse(
                self._events(
                    chat=chat,
                    answer_id=answer_id,
                    model=model,
                    words=words,
                    finish=finish,
                    usage=usage if options.get("include_usage") else None,
                ),
                media_type="text/event-stream",
            )
        text = " ".join(words)
        choice: dict[str, Any]
        if chat:
            choice = {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "reasoning_content": None,
                    "tool_calls": [],
                },
                "logprobs": _logprobs(words) if body.get("logprobs") else None,
                "finish_reason": finish,
                "stop_reason": None,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
                "prompt_logprobs": None,
            }
        return responses.JSONResponse(
            {
                "id": answer_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def _events(
        self,
        *,
        chat: bool,
        answer_id: str,
        model: str,
        words: list[str],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> AsyncIterator[bytes]:
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = {
                "id": answer_id,
                "object": kind,
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def piece(text: str | None, finish_reason: str | None) -> dict[str, Any]:
            if not chat:
                return {
                    "index": 0,
                    "text": text or "",
                    "logprobs": None,
                    "finish_reason": finish_reason,
                    "stop_reason": None,
                }
            delta = {} if text is None else {"content": text}
            return {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }

        pieces = [(w if i == 0 else " " + w) for i, w in enumerate(words)]
        events: Iterator[bytes]
        if chat:
            first = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            events = iter(
                [chunk([first])]
                + [chunk([piece(p, None)]) for p in pieces]
                + [chunk([piece(None, finish)])]
            )
        else:
            last = len(pieces) - 1
            events = iter(
                [chunk([piece(p, finish if i == last else None)]) for i, p in enumerate(pieces)]
            )
        yield next(events)
        await self._wait_for_gate()
        for event in events:
            yield event
        if usage is not None:
            yield chunk([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def _wait_for_gate(self) -> None:
        gate = self._gate
        if gate is None:
            return
        deadline = time.monotonic() + _HOLD_LIMIT_S
        while not gate.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


def _chosen(choices: list[str], prompt_words: list[str]) -> str:
    """The structured-outputs choice a constrained answer gives: the first choice the prompt
    mentions, else the first (the double generates nothing)."""
    said = {w.strip(".,!?").lower() for w in prompt_words}
    return next((c for c in choices if c.lower() in said), choices[0])


def _logprobs(words: list[str]) -> dict[str, Any]:
    """Chat logprobs as vLLM words them: one token per word, each 0.5 likely."""
    return {
        "content": [
            {"token": w, "logprob": math.log(0.5), "bytes": list(w.encode()), "top_logprobs": []}
            for w in words
        ]
    }


def _valid_for(schema: dict[str, Any]) -> dict[str, Any]:
    """The object a constrained answer gives for a JSON schema: each required property its
    first enum value or its type's plain value (the double generates nothing)."""
    plain = {"string": "", "integer": 0, "number": 0, "boolean": False}
    properties = schema.get("properties", {})
    return {
        name: (properties[name].get("enum") or [plain.get(properties[name].get("type"))])[0]
        for name in schema.get("required", [])
    }
