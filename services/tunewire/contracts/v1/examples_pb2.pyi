import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_SOURCE_UNSPECIFIED: _ClassVar[LabelSource]
    LABEL_SOURCE_RULE: _ClassVar[LabelSource]
    LABEL_SOURCE_HUMAN: _ClassVar[LabelSource]
    LABEL_SOURCE_EVENT: _ClassVar[LabelSource]

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_UNSPECIFIED: _ClassVar[Split]
    SPLIT_TRAIN: _ClassVar[Split]
    SPLIT_EVAL: _ClassVar[Split]
LABEL_SOURCE_UNSPECIFIED: LabelSource
LABEL_SOURCE_RULE: LabelSource
LABEL_SOURCE_HUMAN: LabelSource
LABEL_SOURCE_EVENT: LabelSource
SPLIT_UNSPECIFIED: Split
SPLIT_TRAIN: Split
SPLIT_EVAL: Split

class LabelledExample(_message.Message):
    __slots__ = ("objective", "objective_version", "source_id", "record_id", "text", "label", "label_source", "voting_rules", "annotator", "split", "labelled_at")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SOURCE_FIELD_NUMBER: _ClassVar[int]
    VOTING_RULES_FIELD_NUMBER: _ClassVar[int]
    ANNOTATOR_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    LABELLED_AT_FIELD_NUMBER: _ClassVar[int]
    objective: str
    objective_version: int
    source_id: str
    record_id: str
    text: str
    label: str
    label_source: LabelSource
    voting_rules: _containers.RepeatedScalarFieldContainer[str]
    annotator: str
    split: Split
    labelled_at: _timestamp_pb2.Timestamp
    def __init__(self, objective: _Optional[str] = ..., objective_version: _Optional[int] = ..., source_id: _Optional[str] = ..., record_id: _Optional[str] = ..., text: _Optional[str] = ..., label: _Optional[str] = ..., label_source: _Optional[_Union[LabelSource, str]] = ..., voting_rules: _Optional[_Iterable[str]] = ..., annotator: _Optional[str] = ..., split: _Optional[_Union[Split, str]] = ..., labelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
