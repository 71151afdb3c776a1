"""LoRA adapters of the built-in model made in a moment, saved as the trainer saves them.

Training takes seconds; a freshly initialised adapter with random weights in both LoRA
matrices (``init_lora_weights=False``) changes the model's answers just as surely, and
different seeds give adapters that answer differently.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Sequence
from typing import Literal

import peft
import safetensors.torch
import torch

from tunewire.workloads import models

Q_V = ("q_proj", "v_proj")
"""An objective's default target modules."""


def make_adapter(
    directory: pathlib.Path,
    *,
    cache_dir: pathlib.Path,
    seed: int,
    r: int = 8,
    target_modules: Sequence[str] | Literal["all-linear"] = Q_V,
) -> pathlib.Path:
    """Save a random LoRA adapter of the built-in model (built into ``cache_dir`` if needed)
    in ``directory``; the same seed gives the same weights."""
    loaded = models.load(models.TINY_LLAMA, artifacts=None, cache_dir=cache_dir)
    config = peft.LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        init_lora_weights=False,
        task_type=peft.TaskType.CAUSAL_LM,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = peft.get_peft_model(loaded.model, config)
    model.save_pretrained(str(directory))
    return directory


def corrupt_copy(source: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """A copy of an adapter whose weights file is cut short (as a failed download leaves it)."""
    shutil.copytree(source, directory)
    weights = directory / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory


def mismatched_copy(source: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """A copy of an adapter whose config claims another rank than its weights have, as an
    adapter of another base model looks: the shapes do not fit."""
    shutil.copytree(source, directory)
    config_file = directory / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["r"] = config["r"] * 2
    config_file.write_text(json.dumps(config))
    return directory


def foreign_copy(source: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """A copy of an adapter for layers the built-in model does not have."""
    shutil.copytree(source, directory)
    config_file = directory / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["target_modules"] = ["c_attn"]
    config_file.write_text(json.dumps(config))
    return directory


def incomplete_copy(source: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """A copy of an adapter whose weights file lacks the last layer's weights: it loads
    without an error from the file, but half of it would be left at random."""
    shutil.copytree(source, directory)
    weights = directory / "adapter_model.safetensors"
    tensors = safetensors.torch.load_file(weights)
    kept = {k: v for k, v in tensors.items() if ".layers.1." not in k}
    assert kept and len(kept) < len(tensors), "the built-in model has two layers"
    safetensors.torch.save_file(kept, weights)
    return directory
