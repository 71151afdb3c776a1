"""Held-out examples and LoRA adapters on the built-in model, for the evaluator's tests."""

from __future__ import annotations

import pathlib
from typing import Any

import peft
import torch

from tunewire import samples
from tunewire.workloads import models

LABELS = list(samples.LABELS)
INSTRUCTION = (
    "Route incoming support tickets to the right team by intent.\nClassify the user's text. "
    f"Answer with exactly one of these labels: {', '.join(LABELS)}."
)


def chat_examples(count: int, *, seed: int, answer: str | None = None) -> list[dict[str, Any]]:
    """Sample tickets as snapshot lines; the answer is the intent unless ``answer`` is given."""
    found = []
    for event, intent in samples.labelled_tickets(count, seed=seed):
        ticket = event["data"]
        found.append(
            {
                "id": f"ex-{event['id']}",
                "source_id": ticket["ticket_id"],
                "messages": [
                    {"role": "system", "content": INSTRUCTION},
                    {"role": "user", "content": f"{ticket['subject']}\n{ticket['body']}"},
                    {"role": "assistant", "content": answer or intent},
                ],
            }
        )
    return found


def load_base(cache_dir: pathlib.Path) -> models.Loaded:
    """The built-in model, built into (or read from) ``cache_dir``."""
    return models.load(models.TINY_LLAMA, artifacts=None, cache_dir=cache_dir)


def random_adapter(cache_dir: pathlib.Path, directory: pathlib.Path, *, seed: int) -> None:
    """Save an untrained adapter with random (non-zero) weights: it changes the outputs."""
    base = load_base(cache_dir)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = peft.get_peft_model(base.model, config)
    model.save_pretrained(str(directory))
