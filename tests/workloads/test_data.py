"""Snapshots are read line by line with errors naming the place; examples encode so the
loss falls on the answer only, and training and serving prompt alike."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tunewire.core.base import store
from tunewire.workloads import data, failures, models

MESSAGES = [
    {"role": "system", "content": "Classify the user's text. Answer with one label."},
    {"role": "user", "content": "Refund request\nI returned the kettle and want my money back."},
    {"role": "assistant", "content": "refund"},
]


def test_encode_puts_the_loss_on_the_answer_and_eos_only(tiny: models.Loaded) -> None:
    tokenizer = tiny.tokenizer
    encoded = data.encode(tokenizer, MESSAGES, max_seq_len=256)
    prompt = data.prompt_ids(tokenizer, MESSAGES)
    answer = encoded.input_ids[len(prompt) :]

    assert encoded.input_ids[: len(prompt)] == prompt
    assert encoded.labels[: len(prompt)] == [data.IGNORE_INDEX] * len(prompt)
    assert encoded.labels[len(prompt) :] == answer
    assert answer[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(answer[:-1]) == "refund"


def test_training_and_serving_prompt_alike(tiny: models.Loaded) -> None:
    """The prompt of a training example is the prompt of the same live request."""
    assert data.prompt_ids(tiny.tokenizer, MESSAGES) == data.prompt_ids(
        tiny.tokenizer, MESSAGES[:2]
    )


def test_a_long_prompt_loses_its_start_and_the_answer_still_fits(tiny: models.Loaded) -> None:
    long = [MESSAGES[0], {**MESSAGES[1], "content": "word " * 300}, MESSAGES[2]]
    full = data.encode(tiny.tokenizer, long, max_seq_len=4096)
    cut = data.encode(tiny.tokenizer, long, max_seq_len=32)

    assert len(cut.input_ids) == 32
    assert cut.input_ids == full.input_ids[-32:]  # the end of the prompt and the whole answer
    assert cut.labels == full.labels[-32:]


def test_an_example_without_an_answer_is_a_bad_dataset(tiny: models.Loaded) -> None:
    with pytest.raises(failures.BadDataset, match="assistant"):
        data.encode(tiny.tokenizer, MESSAGES[:2], max_seq_len=64)


def _snapshot(artifacts: store.ArtifactStore, train: bytes) -> str:
    prefix = f"datasets/data-test/ds-{uuid.uuid4().hex[:8]}/"
    artifacts.put_bytes(prefix + "train.jsonl", train)
    artifacts.put_json(prefix + "manifest.json", {"dataset_id": "x", "task": "classification"})
    return artifacts.uri(prefix)


def _line(number: int) -> bytes:
    return json.dumps({"id": f"ex-{number}", "source_id": "s", "messages": MESSAGES}).encode()


def test_read_split_returns_every_example_in_order(artifacts: store.ArtifactStore) -> None:
    uri = _snapshot(artifacts, b"\n".join(_line(n) for n in range(3)) + b"\n")
    rows = data.read_split(artifacts, uri, "train")
    assert [r["id"] for r in rows] == ["ex-0", "ex-1", "ex-2"]
    assert rows[0]["messages"] == MESSAGES
    assert data.read_manifest(artifacts, uri.rstrip("/"))["task"] == "classification"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (_line(1) + b"\n{not json\n", r"train.jsonl line 2 is not JSON"),
        (_line(1) + b'\n{"id": "ex-2", "messages": []}\n', r"train.jsonl line 2 needs 'messages'"),
        (
            _line(1)
            + b'\n{"id": "ex-2", "messages": [{"role": "user", "content": "a"},'
            + b' {"role": "user", "content": "b"}]}',
            r"train.jsonl line 2 must end with an assistant turn",
        ),
        (b"\n\n", r"train.jsonl holds no examples"),
    ],
)
def test_a_malformed_split_is_a_bad_dataset_naming_file_and_line(
    artifacts: store.ArtifactStore, content: bytes, says: str
) -> None:
    uri = _snapshot(artifacts, content)
    with pytest.raises(failures.BadDataset, match=re.escape(uri) + says):
        data.read_split(artifacts, uri, "train")


def test_a_missing_split_or_manifest_is_a_bad_dataset(artifacts: store.ArtifactStore) -> None:
    uri = artifacts.uri("datasets/data-test/ds-never-written/")
    with pytest.raises(failures.BadDataset, match=f"{uri}eval.jsonl does not exist"):
        data.read_split(artifacts, uri, "eval")
    with pytest.raises(failures.BadDataset, match=f"{uri}manifest.json does not exist"):
        data.read_manifest(artifacts, uri)
