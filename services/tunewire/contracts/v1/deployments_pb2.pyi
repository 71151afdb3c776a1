import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeploymentChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_CHANGE_KIND_UNSPECIFIED: _ClassVar[DeploymentChangeKind]
    DEPLOYMENT_CHANGE_KIND_PROMOTED: _ClassVar[DeploymentChangeKind]
    DEPLOYMENT_CHANGE_KIND_ROLLED_BACK: _ClassVar[DeploymentChangeKind]
    DEPLOYMENT_CHANGE_KIND_RETIRED: _ClassVar[DeploymentChangeKind]
    DEPLOYMENT_CHANGE_KIND_FAILED: _ClassVar[DeploymentChangeKind]
DEPLOYMENT_CHANGE_KIND_UNSPECIFIED: DeploymentChangeKind
DEPLOYMENT_CHANGE_KIND_PROMOTED: DeploymentChangeKind
DEPLOYMENT_CHANGE_KIND_ROLLED_BACK: DeploymentChangeKind
DEPLOYMENT_CHANGE_KIND_RETIRED: DeploymentChangeKind
DEPLOYMENT_CHANGE_KIND_FAILED: DeploymentChangeKind

class DeploymentChange(_message.Message):
    __slots__ = ("objective", "alias", "from_run_id", "to_run_id", "kind", "actor", "reason", "changed_at")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    FROM_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TO_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    objective: str
    alias: str
    from_run_id: str
    to_run_id: str
    kind: DeploymentChangeKind
    actor: str
    reason: str
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, objective: _Optional[str] = ..., alias: _Optional[str] = ..., from_run_id: _Optional[str] = ..., to_run_id: _Optional[str] = ..., kind: _Optional[_Union[DeploymentChangeKind, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
