"""Why a workload failed, in terms a person can act on.

A workload ends a failed run with a
:class:`~tunewire.core.launchers.launching.FailureReason` and one line of text. Errors the
workload understands (a dataset that cannot be read, a base model that cannot be found) are
raised as :class:`WorkloadError` subclasses carrying their reason; :func:`classify` maps
those and everything else (out of memory, S3 down, a bug) to a reason and a message, so
alerts and the API can tell a user's mistake from a cluster problem.
"""

from __future__ import annotations

import torch

from tunewire.contracts.v1 import training_pb2
from tunewire.core.base import errors
from tunewire.core.launchers import launching

_MAX_MESSAGE = 500
_OOM_ADVICE = "out of memory: lower training.batch_size or training.max_seq_len"
# What torch and the C allocator say when host memory runs out outside torch.OutOfMemoryError.
_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class WorkloadError(errors.TunewireError):
    """A failure the workload understood; ``reason`` classifies it for the training event."""

    reason: launching.FailureReason = training_pb2.FAILURE_REASON_TRAINER_ERROR


class MissingBaseModel(WorkloadError):
    """The base model could not be found or loaded from where the objective points."""

    reason = training_pb2.FAILURE_REASON_MISSING_BASE_MODEL


class BadDataset(WorkloadError):
    """The dataset snapshot is missing, empty or malformed."""

    reason = training_pb2.FAILURE_REASON_BAD_DATASET


class StorageFailure(WorkloadError):
    """Reading or writing S3 failed in a way retrying the workload may fix."""

    reason = training_pb2.FAILURE_REASON_STORAGE


def classify(exc: BaseException) -> tuple[launching.FailureReason, str]:
    """The failure reason of ``exc`` and a one-line message a person can act on."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)
    ):
        return training_pb2.FAILURE_REASON_OUT_OF_MEMORY, _one_line(f"{_OOM_ADVICE} ({exc})")
    if isinstance(exc, WorkloadError):
        return exc.reason, _one_line(exc.message)
    if isinstance(exc, errors.Unavailable):
        return training_pb2.FAILURE_REASON_STORAGE, _one_line(
            f"{exc.message}; check that S3 and the broker are reachable, then retry the run"
        )
    return training_pb2.FAILURE_REASON_TRAINER_ERROR, _one_line(
        f"{type(exc).__name__}: {exc} (see the workload's log for the traceback)"
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_MESSAGE else line[: _MAX_MESSAGE - 1] + "…"
