import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetSnapshot(_message.Message):
    __slots__ = ("objective", "dataset_id", "uri", "split_counts", "label_counts", "content_hash", "parent_dataset_id", "objective_version", "created_at")
    class SplitCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    SPLIT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PARENT_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    objective: str
    dataset_id: str
    uri: str
    split_counts: _containers.ScalarMap[str, int]
    label_counts: _containers.ScalarMap[str, int]
    content_hash: str
    parent_dataset_id: str
    objective_version: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, objective: _Optional[str] = ..., dataset_id: _Optional[str] = ..., uri: _Optional[str] = ..., split_counts: _Optional[_Mapping[str, int]] = ..., label_counts: _Optional[_Mapping[str, int]] = ..., content_hash: _Optional[str] = ..., parent_dataset_id: _Optional[str] = ..., objective_version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
