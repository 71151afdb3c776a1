"""The built-in model, built once per session, and a trainer process's environment."""

from __future__ import annotations

import pathlib

import pytest

from tunewire.stack import embedded
from tunewire.workloads import models


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A model cache holding the built-in model (built here once, as the trainer would)."""
    cache = tmp_path_factory.mktemp("models")
    models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=cache)
    return cache


@pytest.fixture
def tiny(model_cache: pathlib.Path) -> models.Loaded:
    """A fresh copy of the built-in model (LoRA wrapping changes a model in place)."""
    return models.load(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache)


@pytest.fixture
def trainer_env(stack: embedded.EmbeddedStack, model_cache: pathlib.Path) -> dict[str, str]:
    """What a trainer Job gets: the stack's Kafka and S3, the shared model cache, and
    progress often enough to be seen in a run of a few seconds. One torch thread: on two
    cores shared with the stack, two threads can make a run ten times slower."""
    return {
        **stack.service_env(0),
        "TUNEWIRE_MODEL_CACHE": str(model_cache),
        "TUNEWIRE_TRAINER__PROGRESS_EVERY_S": "0.2",
        "TUNEWIRE_TRAINER__THREADS": "1",
        "TUNEWIRE_LOG_LEVEL": "INFO",
    }
