import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectiveStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_STATUS_UNSPECIFIED: _ClassVar[ObjectiveStatus]
    OBJECTIVE_STATUS_ACTIVE: _ClassVar[ObjectiveStatus]
    OBJECTIVE_STATUS_RETIRED: _ClassVar[ObjectiveStatus]
OBJECTIVE_STATUS_UNSPECIFIED: ObjectiveStatus
OBJECTIVE_STATUS_ACTIVE: ObjectiveStatus
OBJECTIVE_STATUS_RETIRED: ObjectiveStatus

class ObjectiveChanged(_message.Message):
    __slots__ = ("name", "version", "status", "spec_json", "changed_at", "changed_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    status: ObjectiveStatus
    spec_json: str
    changed_at: _timestamp_pb2.Timestamp
    changed_by: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., status: _Optional[_Union[ObjectiveStatus, str]] = ..., spec_json: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., changed_by: _Optional[str] = ...) -> None: ...
