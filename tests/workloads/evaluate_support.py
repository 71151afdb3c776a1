"""Held-out examples and LoRA adapters on the built-in model, for the evaluator's tests."""

from __future__ import annotations

import pathlib
import random
from typing import Any

import peft
import torch

from tunewire import samples
from tunewire.core.state import objectives
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


COMPONENTS = ["pump", "belt", "fan", "valve"]


def extraction_spec(name: str) -> dict[str, Any]:
    """A small extraction objective: a log entry in, the failed part and urgency out."""
    return {
        "name": name,
        "task": "extraction",
        "source": {"event_type": "maintenance.logged", "text": "{log}", "id_field": "entry_id"},
        "output": {
            "fields": {
                "component": {"enum": COMPONENTS, "source": "component"},
                "urgent": {"type": "boolean", "source": "urgent"},
            }
        },
        "base_model": models.TINY_LLAMA,
    }


def extraction_examples(
    spec: objectives.ObjectiveSpec, count: int, *, seed: int
) -> list[dict[str, Any]]:
    """Log entries as an extraction snapshot's lines: the answer is the report as canonical
    JSON, the user turn filled in by the spec's text template."""
    assert spec.output is not None
    rng = random.Random(seed)
    found = []
    for index in range(count):
        component, urgent = rng.choice(COMPONENTS), rng.random() < 0.5
        state = "failed, stop the line now" if urgent else "worn, check it next shift"
        entry = {"entry_id": f"m-{seed}-{index}", "log": f"The {component} is {state}."}
        report = {"component": component, "urgent": urgent}
        found.append(
            {
                "id": f"ex-{entry['entry_id']}",
                "source_id": entry["entry_id"],
                "messages": [
                    {"role": "system", "content": objectives.instruction(spec)},
                    {"role": "user", "content": spec.source.text.format(**entry)},
                    {"role": "assistant", "content": spec.output.canonical(report)},
                ],
            }
        )
    return found


def load_base(cache_dir: pathlib.Path) -> models.Loaded:
    """The built-in model, built into (or read from) ``cache_dir``."""
    return models.load(models.TINY_LLAMA, artifacts=None, cache_dir=cache_dir)


def random_adapter(
    cache_dir: pathlib.Path, directory: pathlib.Path, *, seed: int, identity: bool = False
) -> None:
    """Save an untrained adapter with random (non-zero) weights: it changes the outputs.

    With ``identity`` it starts as LoRA does (B = 0) and changes nothing: an adapter whose
    answers are the base model's, as a mis-routed one would give.
    """
    base = load_base(cache_dir)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=identity,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = peft.get_peft_model(base.model, config)
    model.save_pretrained(str(directory))
