"""Settings of the serve service (``TUNEWIRE_SERVE__*``)."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from tunewire.core.base import settings


class VllmSettings(BaseModel):
    """The vLLM server this replica drives (on localhost in the same pod)."""

    base_url: str = "http://127.0.0.1:8000"
    """Where the vLLM server's OpenAI API and runtime LoRA routes answer."""
    api_key: SecretStr | None = None
    """vLLM's ``--api-key``, if it was started with one."""


class ServeLimits(BaseModel):
    """What a request may ask for, and how the replica keeps its adapters."""

    backend: Literal["in_process", "vllm"] = "vllm"
    """``vllm`` drives the vLLM server beside this container; ``in_process`` runs the base
    model and its adapters in this process with torch (the embedded stack)."""
    base_model: str = "builtin://tiny-llama"
    """In process: the base model to load (as in an objective's ``base_model``)."""
    base_name: str = "base"
    """The model name clients use for the base model without an adapter (with vLLM, its
    ``--served-model-name``)."""
    threads: int = Field(default=0, ge=0)
    """In process: torch CPU threads (0: torch's default, one per core)."""
    max_adapters: int = Field(default=8, ge=1)
    """Adapters loaded at once; the least recently used non-champion goes first."""
    adapters_dir: str = "/var/lib/tunewire/adapters"
    """Where adapters are synced from S3 (a volume shared with vLLM in the cluster)."""
    max_prompt_chars: int = Field(default=32_000, ge=1)
    """Longest prompt accepted (all messages together); longer ones are refused with 400."""
    max_output_tokens: int = Field(default=1024, ge=1)
    """Largest ``max_tokens`` a request may ask for (also the default when it asks none)."""
    max_choices: int = Field(default=4, ge=1)
    """Largest ``n`` (answers per request) a request may ask for."""
    reconcile_every_s: float = Field(default=10.0, gt=0)
    """How often the replica re-reads the registry even without an event."""
    retry_after_s: int = Field(default=5, ge=1)
    """The ``Retry-After`` seconds of a 503 answered while the backend is unavailable."""


def _replica() -> str:
    return socket.gethostname()


class ServeSettings(settings.ServiceSettings):
    """Everything the serve process needs."""

    serve: ServeLimits = ServeLimits()
    """The backend, request limits and adapter handling (``TUNEWIRE_SERVE__*``)."""
    vllm: VllmSettings = VllmSettings()
    """The vLLM server, used with the ``vllm`` backend (``TUNEWIRE_VLLM__*``)."""
    consumer_group: str = Field(default_factory=lambda: f"tunewire-serve-{_replica()}")
    """One group per replica: every replica hears every approval and rollback."""
