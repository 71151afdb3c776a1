import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Record(_message.Message):
    __slots__ = ("objective", "objective_version", "source_id", "text", "fields_json", "event_type", "event_id", "event_source", "occurred_at", "ingested_at", "redactions")
    class RedactionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    INGESTED_AT_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    objective: str
    objective_version: int
    source_id: str
    text: str
    fields_json: str
    event_type: str
    event_id: str
    event_source: str
    occurred_at: _timestamp_pb2.Timestamp
    ingested_at: _timestamp_pb2.Timestamp
    redactions: _containers.ScalarMap[str, int]
    def __init__(self, objective: _Optional[str] = ..., objective_version: _Optional[int] = ..., source_id: _Optional[str] = ..., text: _Optional[str] = ..., fields_json: _Optional[str] = ..., event_type: _Optional[str] = ..., event_id: _Optional[str] = ..., event_source: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ingested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., redactions: _Optional[_Mapping[str, int]] = ...) -> None: ...
