"""Settings of the trainer workload (``TUNEWIRE_TRAINER__*`` on top of the shared ones)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tunewire.core.base import settings


class TrainerOptions(BaseModel):
    """How often the trainer reports and checkpoints, and where it runs."""

    checkpoint_every_s: float = Field(default=60.0, gt=0)
    """Seconds between checkpoints to S3 (one is also written at each epoch end). A pod
    pre-empted loses at most this much work; each checkpoint costs one upload of the adapter
    and optimizer state (a few MB for a small adapter)."""
    progress_every_s: float = Field(default=5.0, gt=0)
    """Seconds between progress events and ``progress.json`` updates: often enough for a
    dashboard, rare enough that the topic stays small for a run of hours."""
    seed: int = 0
    """Seeds adapter initialisation, dropout and the per-epoch shuffle; a resumed run
    continues the same sequence."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses a GPU when there is one."""
    threads: int = Field(default=0, ge=0)
    """CPU threads for torch; 0 means every core this process may run on."""


class TrainerSettings(settings.WorkloadSettings):
    """Everything the trainer workload reads from its environment."""

    trainer: TrainerOptions = TrainerOptions()
    """Checkpoint and progress intervals, seed, device and threads (``TUNEWIRE_TRAINER__*``)."""
