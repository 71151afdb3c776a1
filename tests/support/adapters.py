"""Approved adapters put straight into S3 and the registry, for tests that start at serving:
the same files the trainer writes and the same registry entries the evaluator makes."""

from __future__ import annotations

import pathlib
import tempfile

import peft
import torch

from tunewire.core.base import store
from tunewire.core.state import registry
from tunewire.workloads import models


def write_adapter(
    artifacts: store.ArtifactStore,
    *,
    objective: str,
    run_id: str,
    cache_dir: pathlib.Path,
    seed: int,
    corrupt: bool = False,
) -> str:
    """Save a randomly initialised LoRA adapter of the built-in model under
    ``adapters/{objective}/{run_id}/``; returns its URI. Different seeds answer differently.
    ``corrupt`` writes weights that no loader accepts."""
    loaded = models.load(models.TINY_LLAMA, artifacts=None, cache_dir=cache_dir)
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False
    )
    model = peft.get_peft_model(loaded.model, config)
    prefix = f"adapters/{objective}/{run_id}/"
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)
        for path in sorted(pathlib.Path(scratch).iterdir()):
            data = path.read_bytes()
            if corrupt and path.suffix == ".safetensors":
                data = b"not a safetensors file" + data[:64]
            artifacts.put_bytes(prefix + path.name, data)
    return artifacts.uri(prefix)


def approve(
    artifacts: store.ArtifactStore, *, objective: str, run_id: str, adapter_uri: str
) -> registry.RegistryDocument:
    """Register the adapter and approve it, as the evaluator does: it becomes champion."""
    adapters = registry.Registry(artifacts)
    adapters.register(
        objective,
        run_id=run_id,
        dataset_id=f"ds-{run_id}",
        objective_version=1,
        adapter_uri=adapter_uri,
        metrics_uri=artifacts.uri(f"evaluations/{objective}/{run_id}/metrics.json"),
    )
    return adapters.decide(
        objective,
        run_id,
        decision="approved",
        actor="evaluator",
        reason="passed every gate",
        metrics={"accuracy": 0.9},
    )
