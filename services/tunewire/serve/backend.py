"""The serving backend interface: what the gateway and the registry reconciler need.

Two implementations, chosen by configuration: ``vllm_server`` drives a vLLM OpenAI-compatible
server (runtime LoRA loading) over HTTP, ``in_process`` runs the base model with peft
adapters in this process (the embedded stack and the tests). Adapters are addressed by their
served name, ``{objective}@{run_id}``; the base model by :attr:`Backend.base_model`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol

from tunewire.core.base import errors

Endpoint = Literal["chat/completions", "completions"]


class AdapterLoadError(errors.TunewireError):
    """The adapter's files are missing, corrupt or do not fit the base model; never route
    to it."""

    status = 422
    code = "adapter_load_failed"


class UpstreamError(Exception):
    """The backend refused a request with an OpenAI-style error body; passed on as it is."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"backend answered {status}: {body}")
        self.status = status
        self.body = body


@dataclasses.dataclass(frozen=True)
class Choice:
    """A classification: always one of the labels asked, with the probabilities the backend
    could score (every label in process; the chosen one on vLLM)."""

    label: str
    scores: dict[str, float]


class Backend(Protocol):
    """One model server: a base model plus the LoRA adapters loaded on it."""

    @property
    def base_model(self) -> str:
        """The name a request uses to reach the base model without an adapter."""

    @property
    def max_adapters(self) -> int:
        """How many adapters may be loaded at once (the reconciler evicts beyond it)."""

    async def start(self) -> None:
        """Get ready to serve (load the model in process; nothing for a remote server)."""

    async def check(self) -> None:
        """Return when the backend can serve; raise :class:`errors.Unavailable` otherwise."""

    async def load_adapter(self, name: str, path: pathlib.Path) -> None:
        """Load the adapter in ``path`` (a peft adapter directory) under ``name``.

        Idempotent for a name already loaded; :class:`AdapterLoadError` when the files do not
        load; :class:`errors.Unavailable` when the backend is down.
        """

    async def unload_adapter(self, name: str) -> None:
        """Unload an adapter; a name not loaded is not an error."""

    async def loaded_adapters(self) -> set[str]:
        """Names of the adapters loaded now (asked of the server, not remembered)."""

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], *, target: str
    ) -> dict[str, Any]:
        """Answer one non-streaming OpenAI request with ``target`` (adapter or base) as the
        model; returns the OpenAI response body. :class:`UpstreamError` for the backend's own
        4xx answers, :class:`errors.Unavailable` when it is down."""

    def stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, target: str
    ) -> AsyncIterator[bytes]:
        """Answer a streaming request: Server-Sent Events as bytes, each ``data: {...}\\n\\n``,
        ending with ``data: [DONE]\\n\\n``. Errors before the first event as for
        :meth:`complete`."""

    async def classify(
        self, messages: Sequence[dict[str, str]], labels: Sequence[str], *, target: str
    ) -> Choice:
        """Answer a conversation with one of ``labels`` only (never free text), as the
        evaluation scored it; errors as for :meth:`complete`."""

    async def close(self) -> None:
        """Release connections (and, in process, the model)."""
