"""Dataset snapshots as the workloads read them, and how an example becomes token ids.

The label service writes ``train.jsonl`` and ``eval.jsonl`` in chat format (system, user,
assistant turns) under the snapshot's prefix. :func:`prompt_ids` is the one place that turns
the system and user turns into a prompt: the trainer trains on it, and the evaluator and
the serving backend prompt with it, so a model is always asked the way it was taught.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

import transformers

from tunewire.core.base import errors, store
from tunewire.core.state import layout
from tunewire.workloads import failures

Split = Literal["train", "eval"]
MANIFEST = layout.MANIFEST
IGNORE_INDEX = -100
"""Label of the positions the loss skips (the prompt and padding)."""


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One training example: token ids, and the labels the loss is computed on."""

    input_ids: list[int]
    labels: list[int]
    """``IGNORE_INDEX`` on the prompt; the answer's ids (and eos) where the loss applies."""


def read_split(
    artifacts: store.ArtifactStore, dataset_uri: str, split: Split
) -> list[dict[str, Any]]:
    """Every example of one split, checked line by line.

    :class:`failures.BadDataset` names the file (and the line) when the split is missing,
    empty, or holds a line that is not an example with a final assistant turn.
    """
    source, prefix = _location(artifacts, dataset_uri)
    key = f"{prefix}{split}.jsonl"
    uri = source.uri(key)
    try:
        raw = source.get_bytes(key)
    except errors.NotFound:
        raise failures.BadDataset(
            f"dataset file {uri} does not exist; check the dataset uri (a snapshot prefix "
            "written by the label service)"
        ) from None
    examples = [
        _example(line, uri=uri, number=number)
        for number, line in enumerate(raw.splitlines(), start=1)
        if line.strip()
    ]
    if not examples:
        raise failures.BadDataset(
            f"dataset file {uri} holds no examples; build a snapshot with labelled examples"
        )
    return examples


def read_manifest(artifacts: store.ArtifactStore, dataset_uri: str) -> dict[str, Any]:
    """The snapshot's manifest; :class:`failures.BadDataset` when there is none."""
    source, prefix = _location(artifacts, dataset_uri)
    uri = source.uri(prefix + MANIFEST)
    try:
        manifest = source.get_json(prefix + MANIFEST)
    except errors.NotFound:
        raise failures.BadDataset(
            f"dataset manifest {uri} does not exist; the snapshot is missing or incomplete"
        ) from None
    except json.JSONDecodeError as exc:
        raise failures.BadDataset(f"dataset manifest {uri} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise failures.BadDataset(f"dataset manifest {uri} is not a JSON object")
    return manifest


def prompt_ids(
    tokenizer: transformers.PreTrainedTokenizerBase, messages: list[dict[str, Any]]
) -> list[int]:
    """The prompt of a conversation: its turns up to the answer, then the generation prompt.

    A trailing assistant turn (the answer, in a training example) is left out, so the same
    call serves training examples and live requests.
    """
    turns = messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages
    text = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def encode(
    tokenizer: transformers.PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    *,
    max_seq_len: int,
) -> Encoded:
    """Token ids of prompt + answer + eos, with the loss only on the answer and eos.

    When the whole does not fit ``max_seq_len``, the prompt loses tokens from its start
    (the end of the text and the generation prompt stay), so the answer always fits; an
    answer longer than the window itself is cut at its end, keeping one prompt token.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise failures.BadDataset("a training example must end with the assistant's answer")
    answer: list[int] = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    answer = [*answer, tokenizer.eos_token_id][: max_seq_len - 1]
    prompt = prompt_ids(tokenizer, messages)[-(max_seq_len - len(answer)) :]
    return Encoded(
        input_ids=prompt + answer,
        labels=[IGNORE_INDEX] * len(prompt) + answer,
    )


def _location(artifacts: store.ArtifactStore, dataset_uri: str) -> tuple[store.ArtifactStore, str]:
    """The store and key prefix (ending in ``/``) of a snapshot's ``s3://`` address."""
    try:
        bucket, prefix = store.split_uri(dataset_uri)
    except errors.InvalidRequest as exc:
        raise failures.BadDataset(exc.message) from None
    return artifacts.for_bucket(bucket), prefix.rstrip("/") + "/"


def _example(line: bytes, *, uri: str, number: int) -> dict[str, Any]:
    where = f"{uri} line {number}"
    try:
        example = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise failures.BadDataset(f"{where} is not JSON: {exc}") from None
    if not isinstance(example, dict):
        raise failures.BadDataset(f"{where} is not a JSON object")
    messages = example.get("messages")
    if (
        not isinstance(messages, list)
        or len(messages) < 2
        or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise failures.BadDataset(
            f"{where} needs 'messages': a list of {{role, content}} turns (at least two)"
        )
    if messages[-1]["role"] != "assistant":
        raise failures.BadDataset(f"{where} must end with an assistant turn (the answer)")
    if not isinstance(example.get("id"), str):
        raise failures.BadDataset(f"{where} needs a string 'id'")
    return example
