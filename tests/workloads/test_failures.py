"""Every exception a trainer can meet becomes a reason and one line a person can act on."""

from __future__ import annotations

import pytest
import torch

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors
from tunewire.workloads import failures


@pytest.mark.parametrize(
    ("exc", "reason", "says"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            training_pb2.FAILURE_REASON_OUT_OF_MEMORY,
            "lower training.batch_size or training.max_seq_len",
        ),
        (
            MemoryError(),
            training_pb2.FAILURE_REASON_OUT_OF_MEMORY,
            "lower training.batch_size or training.max_seq_len",
        ),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                "can't allocate memory: you tried to allocate 1 bytes"
            ),
            training_pb2.FAILURE_REASON_OUT_OF_MEMORY,
            "lower training.batch_size",
        ),
        (
            failures.BadDataset("s3://b/datasets/x/train.jsonl line 3 is not JSON"),
            training_pb2.FAILURE_REASON_BAD_DATASET,
            "line 3 is not JSON",
        ),
        (
            failures.MissingBaseModel("there is no built-in model 'builtin://x'"),
            training_pb2.FAILURE_REASON_MISSING_BASE_MODEL,
            "builtin://x",
        ),
        (
            errors.Unavailable("S3 is not reachable (reading x)"),
            training_pb2.FAILURE_REASON_STORAGE,
            "check that S3 and the broker are reachable",
        ),
        (
            ValueError("shapes do not match\nsecond line"),
            training_pb2.FAILURE_REASON_TRAINER_ERROR,
            "ValueError: shapes do not match second line",
        ),
    ],
)
def test_classify_gives_the_reason_and_one_actionable_line(
    exc: BaseException, reason: int, says: str
) -> None:
    got_reason, message = failures.classify(exc)
    assert got_reason == reason
    assert says in message
    assert "\n" not in message


def test_a_long_message_is_cut_to_one_readable_line() -> None:
    _, message = failures.classify(RuntimeError("x" * 5000))
    assert len(message) <= 500
    assert message.endswith("…")
