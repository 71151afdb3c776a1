import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_APPROVED: _ClassVar[Decision]
    DECISION_REJECTED: _ClassVar[Decision]
    DECISION_NEEDS_REVIEW: _ClassVar[Decision]
DECISION_UNSPECIFIED: Decision
DECISION_APPROVED: Decision
DECISION_REJECTED: Decision
DECISION_NEEDS_REVIEW: Decision

class ModelMetrics(_message.Message):
    __slots__ = ("model_ref", "values", "examples")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_REF_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    model_ref: str
    values: _containers.ScalarMap[str, float]
    examples: int
    def __init__(self, model_ref: _Optional[str] = ..., values: _Optional[_Mapping[str, float]] = ..., examples: _Optional[int] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("metric", "rule", "threshold", "value", "passed")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    metric: str
    rule: str
    threshold: float
    value: float
    passed: bool
    def __init__(self, metric: _Optional[str] = ..., rule: _Optional[str] = ..., threshold: _Optional[float] = ..., value: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("objective", "objective_version", "run_id", "dataset_id", "metrics_uri", "base", "champion", "candidate", "gates", "decision", "decided_by", "reason", "decided_at")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_URI_FIELD_NUMBER: _ClassVar[int]
    BASE_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    GATES_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    objective: str
    objective_version: int
    run_id: str
    dataset_id: str
    metrics_uri: str
    base: ModelMetrics
    champion: ModelMetrics
    candidate: ModelMetrics
    gates: _containers.RepeatedCompositeFieldContainer[GateResult]
    decision: Decision
    decided_by: str
    reason: str
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, objective: _Optional[str] = ..., objective_version: _Optional[int] = ..., run_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., metrics_uri: _Optional[str] = ..., base: _Optional[_Union[ModelMetrics, _Mapping]] = ..., champion: _Optional[_Union[ModelMetrics, _Mapping]] = ..., candidate: _Optional[_Union[ModelMetrics, _Mapping]] = ..., gates: _Optional[_Iterable[_Union[GateResult, _Mapping]]] = ..., decision: _Optional[_Union[Decision, str]] = ..., decided_by: _Optional[str] = ..., reason: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
