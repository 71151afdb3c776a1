"""The vLLM backend: drives a vLLM OpenAI-compatible server over HTTP.

vLLM must be started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, so
that ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` exist; the adapter directory
named in a load must be readable by vLLM (the volume the reconciler syncs adapters to).
vLLM never refuses a load for capacity: beyond ``--max-cpu-loras`` it evicts the least
recently used adapter from its CPU cache and reloads it from its path on the next request,
so :attr:`VllmBackend.max_adapters` is what keeps the reconciler from thrashing it.

vLLM's error bodies changed shape across releases (older ones, such as 0.8, send a flat
``{"object": "error", "message": ...}``, current ones ``{"error": {"message": ..., "type": ...,
"code": ...}}``); both are read here, and passed on to clients as they are.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, NoReturn

import httpx

from tunewire.core.base import errors
from tunewire.serve import backend

log = logging.getLogger(__name__)

_ENABLE_HINT = (
    "start vLLM with --enable-lora and the environment variable "
    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
)
_EVENT_END = b"\n\n"
_METRICS_TIMEOUT_S = 5.0
"""Under Prometheus' default scrape timeout: a vLLM too slow to answer is reported down."""
_CHOICE_MAX_TOKENS = 64
"""Room for the longest label: the constraint ends the answer once a label is complete."""


class VllmBackend:
    """One vLLM server: its base model and the LoRA adapters loaded on it at runtime."""

    def __init__(
        self,
        *,
        base_url: str,
        base_model: str,
        max_adapters: int,
        timeout_s: float = 60,
        api_key: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base_url = base_url.rstrip("/")
        self._base_model = base_model
        self._max_adapters = max_adapters
        self._base_confirmed = False
        # Connecting should fail fast (the server is down); answering may take the full
        # timeout (a long generation).
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    @property
    def base_model(self) -> str:
        return self._base_model

    @property
    def max_adapters(self) -> int:
        return self._max_adapters

    async def start(self) -> None:
        """Nothing to start: the vLLM server runs beside this process."""

    async def check(self) -> None:
        """``/health`` answers 200, and (once) the server serves the configured base model."""
        response = await self._send("GET", "/health")
        if _route_missing(response):
            raise errors.Misconfigured(
                f"{self._base_url} has no /health: set the vLLM base URL to the server's root "
                "(http://host:port, without /v1)"
            )
        if response.status_code != 200:
            raise errors.Unavailable(
                f"vLLM at {self._base_url} is not healthy (/health answered "
                f"{response.status_code}); retry when its engine is up"
            )
        if self._base_confirmed:
            return
        served = {entry.get("id") for entry in await self._models()}
        if self._base_model not in served:
            raise errors.Misconfigured(
                f"vLLM at {self._base_url} serves {sorted(map(str, served))}, not the "
                f"configured base model {self._base_model!r}: set the served model name to "
                "vLLM's --served-model-name"
            )
        self._base_confirmed = True

    async def load_adapter(self, name: str, path: pathlib.Path) -> None:
        """Load through ``/v1/load_lora_adapter``, then confirm vLLM lists it.

        vLLM refuses a name it has loaded already (400); for tunewire a name is one adapter
        version, so that refusal means the work is done.
        """
        response = await self._send(
            "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}
        )
        if response.status_code != 200:
            message = _message(response)
            if response.status_code == 400 and "already been loaded" in message:
                log.info("adapter %s was loaded already", name)
            elif _route_missing(response):
                raise errors.Misconfigured(
                    f"vLLM at {self._base_url} does not allow loading adapters at runtime: "
                    + _ENABLE_HINT
                )
            elif response.status_code in (400, 404, 422):
                raise backend.AdapterLoadError(
                    f"vLLM could not load adapter {name!r} from {path}: {message}"
                )
            elif response.status_code == 500 and _is_vllm_error(response):
                await self._raise_load_failure(name, path, message)
            else:
                self._raise_for_status(response)
        if name not in await self.loaded_adapters():
            raise backend.AdapterLoadError(
                f"vLLM accepted adapter {name!r} but does not list it in /v1/models; "
                "check vLLM's log"
            )

    async def unload_adapter(self, name: str) -> None:
        response = await self._send("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code == 200:
            return
        if _route_missing(response):
            raise errors.Misconfigured(
                f"vLLM at {self._base_url} does not allow unloading adapters at runtime: "
                + _ENABLE_HINT
            )
        if response.status_code == 404:
            log.info("adapter %s was not loaded: %s", name, _message(response))
            return
        self._raise_for_status(response)

    async def loaded_adapters(self) -> set[str]:
        """The ``/v1/models`` entries that are LoRA adapters (vLLM gives each a ``parent``)."""
        return {
            str(entry["id"])
            for entry in await self._models()
            if entry.get("parent") is not None and entry.get("id") != self._base_model
        }

    async def complete(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> dict[str, Any]:
        response = await self._send(
            "POST", f"/v1/{endpoint}", json=body | {"model": target, "stream": False}
        )
        self._raise_for_status(response)
        try:
            answer = response.json()
        except json.JSONDecodeError as exc:
            raise errors.Unavailable(
                f"vLLM at {self._base_url} answered /v1/{endpoint} with a body that is not "
                "JSON; retry later"
            ) from exc
        if not isinstance(answer, dict):
            raise errors.Unavailable(f"vLLM answered /v1/{endpoint} with {answer!r}")
        return answer

    async def stream(
        self, endpoint: backend.Endpoint, body: dict[str, Any], *, target: str
    ) -> AsyncIterator[bytes]:
        """Relay vLLM's Server-Sent Events one whole event at a time, as each arrives."""
        request = self._client.build_request(
            "POST", f"/v1/{endpoint}", json=body | {"model": target, "stream": True}
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._down(exc) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                self._raise_for_status(response)
            pending = b""
            async for chunk in response.aiter_bytes():
                pending += chunk
                *events, pending = pending.split(_EVENT_END)
                for event in events:
                    yield event + _EVENT_END
            if pending.strip():
                yield pending
        except httpx.TransportError as exc:
            raise self._down(exc) from exc
        finally:
            await response.aclose()

    async def classify(
        self, messages: Sequence[dict[str, str]], labels: Sequence[str], *, target: str
    ) -> backend.Choice:
        """One of ``labels`` through vLLM's structured outputs (a choice constraint), greedy;
        the chosen label's probability from the logprobs of its tokens."""
        body = {
            "messages": list(messages),
            "structured_outputs": {"choice": list(labels)},
            "temperature": 0,
            "max_tokens": _CHOICE_MAX_TOKENS,
            "logprobs": True,
        }
        answer = await self.complete("chat/completions", body, target=target)
        try:
            choice = answer["choices"][0]
            label = choice["message"]["content"]
            tokens = (choice.get("logprobs") or {}).get("content") or []
            logprob = sum(float(t["logprob"]) for t in tokens)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise errors.Unavailable(f"vLLM answered a classification with {answer!r}") from exc
        if label not in labels:
            raise errors.Misconfigured(
                f"vLLM answered {label!r}, not one of the labels it was constrained to; does "
                "this vLLM support structured outputs (0.10 or later)?"
            )
        return backend.Choice(label=label, scores={label: math.exp(logprob)} if tokens else {})

    async def close(self) -> None:
        await self._client.aclose()

    async def _models(self) -> list[dict[str, Any]]:
        response = await self._send("GET", "/v1/models")
        self._raise_for_status(response)
        try:
            data = response.json()["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise errors.Unavailable(
                f"vLLM at {self._base_url} answered /v1/models without a model list"
            ) from exc
        return [entry for entry in data if isinstance(entry, dict)]

    async def metrics(self) -> tuple[bytes, str]:
        """vLLM's own Prometheus metrics (queue, KV cache, LoRA requests) and their content
        type, for serve to relay on ``/metrics/vllm``: vLLM itself stays on loopback."""
        response = await self._send("GET", "/metrics", timeout=_METRICS_TIMEOUT_S)
        if response.status_code != 200:
            raise errors.Unavailable(
                f"vLLM at {self._base_url} answered /metrics with {response.status_code}"
            )
        return response.content, response.headers.get("content-type", "text/plain")

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._down(exc) from exc

    def _down(self, exc: httpx.TransportError) -> errors.Unavailable:
        if isinstance(exc, httpx.TimeoutException):
            return errors.Unavailable(
                f"vLLM at {self._base_url} did not answer in time ({type(exc).__name__}); "
                "retry later, or raise the backend timeout for long generations"
            )
        return errors.Unavailable(
            f"vLLM at {self._base_url} is unreachable ({type(exc).__name__}: {exc}); "
            "retry when it is up"
        )

    def _raise_for_status(self, response: httpx.Response) -> None:
        """Nothing for 2xx; the client's own mistakes as :class:`backend.UpstreamError`, ours
        (a refused API key) as :class:`errors.Misconfigured`, the server's as unavailable."""
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise errors.Misconfigured(
                f"vLLM at {self._base_url} refused tunewire's API key ({status}): set the "
                "vLLM API key to the one vLLM was started with (--api-key)"
            )
        if _route_missing(response):
            raise errors.Misconfigured(
                f"{self._base_url} has no {response.request.url.path}: set the vLLM base URL to "
                "the server's root (http://host:port, without /v1)"
            )
        if status < 500:
            raise backend.UpstreamError(status, _error_body(response))
        raise errors.Unavailable(
            f"vLLM at {self._base_url} failed ({status}): {_message(response)}; retry later"
        )

    async def _raise_load_failure(self, name: str, path: pathlib.Path, message: str) -> NoReturn:
        """Recent vLLM answers 500 both for an adapter that does not fit and for a dead
        engine; only a healthy server means the adapter is at fault."""
        health = await self._send("GET", "/health")
        if health.status_code == 200:
            raise backend.AdapterLoadError(
                f"vLLM could not load adapter {name!r} from {path}: {message}"
            )
        raise errors.Unavailable(
            f"vLLM at {self._base_url} failed loading adapter {name!r} and is not healthy: "
            f"{message}; retry when it is up"
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def _is_vllm_error(response: httpx.Response) -> bool:
    """Whether the body is one of vLLM's error shapes (nested or flat)."""
    body = _json(response)
    return isinstance(body, dict) and (
        isinstance(body.get("error"), dict) or body.get("object") == "error"
    )


def _route_missing(response: httpx.Response) -> bool:
    """A 404 from the web framework (no such route), not from vLLM's own handlers."""
    return response.status_code == 404 and not _is_vllm_error(response)


def _message(response: httpx.Response) -> str:
    body = _json(response)
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        for key in ("message", "detail", "error"):
            if key in body:
                return str(body[key])
    return response.text.strip() or f"HTTP {response.status_code}"


def _error_body(response: httpx.Response) -> dict[str, Any]:
    """vLLM's own error body, or one in the OpenAI shape when something else answered."""
    if _is_vllm_error(response):
        body: dict[str, Any] = response.json()
        return body
    return {
        "error": {
            "message": _message(response),
            "type": "BadRequestError",
            "param": None,
            "code": response.status_code,
        }
    }
