"""The built-in model is reproducible, and every kind of base_model loads the same way."""

from __future__ import annotations

import concurrent.futures
import hashlib
import pathlib
import threading

import pytest
import torch

from tunewire.core.base import store
from tunewire.workloads import data, failures, models


def _digests(directory: pathlib.Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_the_same_seed_builds_byte_identical_files(tmp_path: pathlib.Path) -> None:
    models.build_tiny_llama(tmp_path / "a", seed=0)
    models.build_tiny_llama(tmp_path / "b", seed=0)
    models.build_tiny_llama(tmp_path / "c", seed=1)
    first, again, other = (_digests(tmp_path / n) for n in "abc")
    assert set(first) >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert first == again
    assert other["model.safetensors"] != first["model.safetensors"]
    assert other["tokenizer.json"] == first["tokenizer.json"]


def test_the_builtin_model_is_a_small_llama_with_a_chat_tokenizer(tiny: models.Loaded) -> None:
    assert tiny.model.config.model_type == "llama"
    assert sum(p.numel() for p in tiny.model.parameters()) < 2_000_000
    tokenizer = tiny.tokenizer
    assert tokenizer.pad_token_id is not None
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    messages = [
        {"role": "system", "content": "Classify the user's text."},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    ids = data.prompt_ids(tokenizer, messages)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == tokenizer.bos_token
    assert {"<|system|>", "<|user|>", "<|assistant|>"} <= set(tokens)
    assert tokenizer.decode(ids, skip_special_tokens=True).count("Where is my parcel?") == 1
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), tiny.model.config.vocab_size)


def test_builtin_is_built_once_and_then_reused(tmp_path: pathlib.Path) -> None:
    ref = models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=tmp_path)
    built = pathlib.Path(ref)
    assert built.parent == tmp_path / "builtin"
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no scratch left behind
    mtime = (built / "model.safetensors").stat().st_mtime_ns
    assert models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=tmp_path) == ref
    assert (built / "model.safetensors").stat().st_mtime_ns == mtime


def test_two_racing_builders_leave_one_whole_copy(tmp_path: pathlib.Path) -> None:
    both_filled = threading.Barrier(2)

    def fill(directory: pathlib.Path) -> None:
        (directory / "config.json").write_text(threading.current_thread().name)
        both_filled.wait(timeout=10)  # neither renames before both have built

    target = tmp_path / "builtin" / "tiny-llama-1"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: models._materialise(target, fill), range(2)))

    assert results == [target, target]
    assert (target / "config.json").read_text()  # one builder's whole copy
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_an_unknown_builtin_model_is_a_missing_base_model(tmp_path: pathlib.Path) -> None:
    with pytest.raises(failures.MissingBaseModel, match=r"builtin://gpt-17.*builtin://tiny-llama"):
        models.resolve("builtin://gpt-17", artifacts=None, cache_dir=tmp_path)


def test_an_s3_prefix_is_downloaded_once_and_loads_like_the_builtin(
    artifacts: store.ArtifactStore, model_cache: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    source = pathlib.Path(models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache))
    prefix = f"models/tiny-{tmp_path.name}/"
    for path in source.iterdir():
        artifacts.upload_file(prefix + path.name, path, content_type="application/octet-stream")
    uri = artifacts.uri(prefix)
    cache = tmp_path / "cache"

    ref = models.resolve(uri, artifacts=artifacts, cache_dir=cache)

    assert _digests(pathlib.Path(ref)) == _digests(source)
    loaded = models.load(uri, artifacts=artifacts, cache_dir=cache)
    assert loaded.ref == ref
    assert (
        loaded.tokenizer.get_vocab()
        == models.load(
            models.TINY_LLAMA, artifacts=None, cache_dir=model_cache
        ).tokenizer.get_vocab()
    )
    # Complete in the cache: gone from S3, it still resolves without a download.
    for key in list(artifacts.list_keys(prefix)):
        artifacts.delete(key)
    assert models.resolve(uri, artifacts=artifacts, cache_dir=cache) == ref


def test_a_missing_s3_prefix_is_a_missing_base_model(
    artifacts: store.ArtifactStore, tmp_path: pathlib.Path
) -> None:
    uri = artifacts.uri("models/never-uploaded/")
    with pytest.raises(failures.MissingBaseModel, match=f"no objects under {uri}"):
        models.resolve(uri, artifacts=artifacts, cache_dir=tmp_path)
    assert not (tmp_path / "s3").exists() or not any((tmp_path / "s3").rglob("*.json"))


def test_a_local_directory_is_used_in_place(model_cache: pathlib.Path) -> None:
    directory = models.resolve(models.TINY_LLAMA, artifacts=None, cache_dir=model_cache)
    assert models.resolve(directory, artifacts=None, cache_dir=model_cache) == directory
    loaded = models.load(directory, artifacts=None, cache_dir=model_cache)
    assert loaded.ref == directory


def test_a_missing_local_path_is_a_missing_base_model(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "no-model-here"
    with pytest.raises(failures.MissingBaseModel, match=str(missing)):
        models.resolve(str(missing), artifacts=None, cache_dir=tmp_path)


def test_a_directory_without_a_model_is_a_missing_base_model(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(failures.MissingBaseModel, match="cannot load base model"):
        models.load(str(tmp_path / "empty"), artifacts=None, cache_dir=tmp_path)


def test_anything_else_is_taken_as_a_hub_id(tmp_path: pathlib.Path) -> None:
    assert (
        models.resolve("Qwen/Qwen2.5-0.5B-Instruct", artifacts=None, cache_dir=tmp_path)
        == "Qwen/Qwen2.5-0.5B-Instruct"
    )
