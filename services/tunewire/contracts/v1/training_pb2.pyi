import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FailureReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_REASON_UNSPECIFIED: _ClassVar[FailureReason]
    FAILURE_REASON_OUT_OF_MEMORY: _ClassVar[FailureReason]
    FAILURE_REASON_BAD_DATASET: _ClassVar[FailureReason]
    FAILURE_REASON_MISSING_BASE_MODEL: _ClassVar[FailureReason]
    FAILURE_REASON_DEADLINE_EXCEEDED: _ClassVar[FailureReason]
    FAILURE_REASON_IMAGE_PULL: _ClassVar[FailureReason]
    FAILURE_REASON_UNSCHEDULABLE: _ClassVar[FailureReason]
    FAILURE_REASON_CANCELLED_BY_USER: _ClassVar[FailureReason]
    FAILURE_REASON_PREEMPTED: _ClassVar[FailureReason]
    FAILURE_REASON_STORAGE: _ClassVar[FailureReason]
    FAILURE_REASON_TRAINER_ERROR: _ClassVar[FailureReason]
    FAILURE_REASON_UNKNOWN: _ClassVar[FailureReason]
FAILURE_REASON_UNSPECIFIED: FailureReason
FAILURE_REASON_OUT_OF_MEMORY: FailureReason
FAILURE_REASON_BAD_DATASET: FailureReason
FAILURE_REASON_MISSING_BASE_MODEL: FailureReason
FAILURE_REASON_DEADLINE_EXCEEDED: FailureReason
FAILURE_REASON_IMAGE_PULL: FailureReason
FAILURE_REASON_UNSCHEDULABLE: FailureReason
FAILURE_REASON_CANCELLED_BY_USER: FailureReason
FAILURE_REASON_PREEMPTED: FailureReason
FAILURE_REASON_STORAGE: FailureReason
FAILURE_REASON_TRAINER_ERROR: FailureReason
FAILURE_REASON_UNKNOWN: FailureReason

class TrainingEvent(_message.Message):
    __slots__ = ("run_id", "objective", "dataset_id", "objective_version", "attempt", "occurred_at", "submitted", "started", "progress", "succeeded", "failed", "cancelled")
    class Submitted(_message.Message):
        __slots__ = ("launcher", "job_name", "base_model", "config_json")
        LAUNCHER_FIELD_NUMBER: _ClassVar[int]
        JOB_NAME_FIELD_NUMBER: _ClassVar[int]
        BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
        CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
        launcher: str
        job_name: str
        base_model: str
        config_json: str
        def __init__(self, launcher: _Optional[str] = ..., job_name: _Optional[str] = ..., base_model: _Optional[str] = ..., config_json: _Optional[str] = ...) -> None: ...
    class Started(_message.Message):
        __slots__ = ("worker", "resumed_from_step")
        WORKER_FIELD_NUMBER: _ClassVar[int]
        RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
        worker: str
        resumed_from_step: int
        def __init__(self, worker: _Optional[str] = ..., resumed_from_step: _Optional[int] = ...) -> None: ...
    class Progress(_message.Message):
        __slots__ = ("step", "total_steps", "epoch", "loss", "tokens_per_second", "eta_seconds")
        STEP_FIELD_NUMBER: _ClassVar[int]
        TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
        EPOCH_FIELD_NUMBER: _ClassVar[int]
        LOSS_FIELD_NUMBER: _ClassVar[int]
        TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
        ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
        step: int
        total_steps: int
        epoch: float
        loss: float
        tokens_per_second: float
        eta_seconds: float
        def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., eta_seconds: _Optional[float] = ...) -> None: ...
    class Succeeded(_message.Message):
        __slots__ = ("adapter_uri", "metrics")
        class MetricsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: float
            def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
        ADAPTER_URI_FIELD_NUMBER: _ClassVar[int]
        METRICS_FIELD_NUMBER: _ClassVar[int]
        adapter_uri: str
        metrics: _containers.ScalarMap[str, float]
        def __init__(self, adapter_uri: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...
    class Failed(_message.Message):
        __slots__ = ("reason", "message")
        REASON_FIELD_NUMBER: _ClassVar[int]
        MESSAGE_FIELD_NUMBER: _ClassVar[int]
        reason: FailureReason
        message: str
        def __init__(self, reason: _Optional[_Union[FailureReason, str]] = ..., message: _Optional[str] = ...) -> None: ...
    class Cancelled(_message.Message):
        __slots__ = ("actor", "reason")
        ACTOR_FIELD_NUMBER: _ClassVar[int]
        REASON_FIELD_NUMBER: _ClassVar[int]
        actor: str
        reason: str
        def __init__(self, actor: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    objective: str
    dataset_id: str
    objective_version: int
    attempt: int
    occurred_at: _timestamp_pb2.Timestamp
    submitted: TrainingEvent.Submitted
    started: TrainingEvent.Started
    progress: TrainingEvent.Progress
    succeeded: TrainingEvent.Succeeded
    failed: TrainingEvent.Failed
    cancelled: TrainingEvent.Cancelled
    def __init__(self, run_id: _Optional[str] = ..., objective: _Optional[str] = ..., dataset_id: _Optional[str] = ..., objective_version: _Optional[int] = ..., attempt: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., submitted: _Optional[_Union[TrainingEvent.Submitted, _Mapping]] = ..., started: _Optional[_Union[TrainingEvent.Started, _Mapping]] = ..., progress: _Optional[_Union[TrainingEvent.Progress, _Mapping]] = ..., succeeded: _Optional[_Union[TrainingEvent.Succeeded, _Mapping]] = ..., failed: _Optional[_Union[TrainingEvent.Failed, _Mapping]] = ..., cancelled: _Optional[_Union[TrainingEvent.Cancelled, _Mapping]] = ...) -> None: ...
