"""Worker results pickle as their constructors' arguments: equal after the trip, smaller."""

from __future__ import annotations

import dataclasses
import pickle

from tunewire.core.bus import pooling


@dataclasses.dataclass(frozen=True)
class _Inner(pooling.PickledAsArguments):
    name: str
    votes: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Outer(pooling.PickledAsArguments):
    record_id: str
    inner: _Inner
    derived: int = dataclasses.field(init=False, default=7)


def test_a_dataclass_makes_the_trip_equal_without_its_field_names() -> None:
    original = _Outer("rec-1", _Inner("shipping", ("shipping/regex#1",)))
    data = pickle.dumps([original, original.inner], protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(data) == [original, original.inner]
    # Rebuilt by calling the class, not by restoring a __dict__ keyed by field names.
    assert b"record_id" not in data and b"votes" not in data
