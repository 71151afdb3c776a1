"""Every contract message survives serialisation, in binary and in JSON, with every field set.

The messages are filled from their descriptors, so a message or field added to proto/ is covered
without editing this file; a oneof is exercised once per member.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator
from types import ModuleType
from typing import cast

import pytest
from google.protobuf import descriptor, json_format, message, message_factory, timestamp_pb2

MODULES = [
    "datasets_pb2",
    "deployments_pb2",
    "evaluations_pb2",
    "events_pb2",
    "examples_pb2",
    "objectives_pb2",
    "records_pb2",
    "training_pb2",
]

FieldDescriptor = descriptor.FieldDescriptor


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"tunewire.contracts.v1.{name}")


def _descriptors() -> Iterator[descriptor.Descriptor]:
    def walk(message_type: descriptor.Descriptor) -> Iterator[descriptor.Descriptor]:
        if message_type.GetOptions().map_entry:
            return
        yield message_type
        for nested in message_type.nested_types:
            yield from walk(nested)

    for name in MODULES:
        for message_type in _module(name).DESCRIPTOR.message_types_by_name.values():
            yield from walk(message_type)


def _scalar(field: FieldDescriptor, seed: int) -> object:
    """A value of the field's type that is not its default."""
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{seed}"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"{field.name}-{seed}".encode()
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return seed + 0.5
    return seed


def _fill(target: message.Message, *, oneof_choice: dict[str, str], seed: int = 1) -> None:
    """Set every field of ``target`` (one member per oneof, as chosen) to a non-default value."""
    # The stubs type DESCRIPTOR as either the upb or the pure-Python descriptor; both behave alike.
    fields = cast("list[FieldDescriptor]", list(target.DESCRIPTOR.fields))
    for number, field in enumerate(fields, start=seed):
        oneof = field.containing_oneof
        if oneof is not None and oneof_choice.get(oneof.full_name) != field.name:
            continue
        value = getattr(target, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            key = _scalar(field.message_type.fields_by_name["key"], number)
            if value_field.message_type is not None:
                _fill(value[key], oneof_choice=oneof_choice, seed=number)
            else:
                value[key] = _scalar(value_field, number)
        elif field.message_type is not None and field.is_repeated:
            _fill(value.add(), oneof_choice=oneof_choice, seed=number)
        elif field.message_type is not None:
            _fill(value, oneof_choice=oneof_choice, seed=number)
        elif field.is_repeated:
            value.append(_scalar(field, number))
        else:
            setattr(target, field.name, _scalar(field, number))
    if isinstance(target, timestamp_pb2.Timestamp):
        target.seconds, target.nanos = 1_735_689_600 + seed, 500_000_000  # a valid instant


def _variants(message_type: descriptor.Descriptor) -> Iterator[dict[str, str]]:
    """One oneof choice per member of each oneof, in this message and the ones it holds."""
    oneofs: dict[str, list[str]] = {}

    def collect(current: descriptor.Descriptor, seen: frozenset[str]) -> None:
        for oneof in current.oneofs:
            oneofs[oneof.full_name] = [field.name for field in oneof.fields]
        for field in current.fields:
            nested = field.message_type
            if nested is not None and nested.full_name not in seen:
                collect(nested, seen | {nested.full_name})

    collect(message_type, frozenset({message_type.full_name}))
    names = sorted(oneofs)
    for members in itertools.product(*(oneofs[name] for name in names)):
        yield dict(zip(names, members, strict=True))


MESSAGES = list(_descriptors())
CASES = [
    pytest.param(message_type, choice, id=f"{message_type.full_name}{sorted(choice.values())}")
    for message_type in MESSAGES
    for choice in _variants(message_type)
]


def test_every_message_is_covered() -> None:
    covered = {message_type.full_name for message_type in MESSAGES}
    assert "tunewire.v1.Record" in covered
    assert "tunewire.v1.TrainingEvent.Progress" in covered
    assert len(covered) >= 16


@pytest.mark.parametrize(("message_type", "oneof_choice"), CASES)
def test_roundtrip(message_type: descriptor.Descriptor, oneof_choice: dict[str, str]) -> None:
    cls = message_factory.GetMessageClass(message_type)
    original = cls()
    _fill(original, oneof_choice=oneof_choice)
    set_fields = {field.name for field, _ in original.ListFields()}
    expected = {
        field.name
        for field in message_type.fields
        if field.containing_oneof is None
        or oneof_choice[field.containing_oneof.full_name] == field.name
    }
    assert set_fields == expected, "every field must hold a non-default value"

    parsed = cls.FromString(original.SerializeToString())
    assert parsed == original

    from_json = json_format.Parse(json_format.MessageToJson(original), cls())
    assert from_json == original


def test_generated_modules_import_as_a_package() -> None:
    from tunewire.contracts.v1 import records_pb2, training_pb2

    assert records_pb2.Record.__module__ == "tunewire.contracts.v1.records_pb2"
    progress = training_pb2.TrainingEvent(
        run_id="run-1", progress=training_pb2.TrainingEvent.Progress(step=3, loss=0.25)
    )
    assert progress.WhichOneof("phase") == "progress"
    failed = training_pb2.TrainingEvent(
        failed=training_pb2.TrainingEvent.Failed(
            reason=training_pb2.FAILURE_REASON_OUT_OF_MEMORY, message="CUDA out of memory"
        )
    )
    assert (
        training_pb2.TrainingEvent.FromString(failed.SerializeToString()).WhichOneof("phase")
        == "failed"
    )


def test_unknown_fields_from_a_newer_producer_survive() -> None:
    """Additive changes only work if an older consumer keeps what it does not know."""
    from tunewire.contracts.v1 import objectives_pb2

    newer = objectives_pb2.ObjectiveChanged(name="support-intent", version=2).SerializeToString()
    newer += bytes([(15 << 3) | 2, 3]) + b"new"  # field 15, length-delimited, "new"
    older = objectives_pb2.ObjectiveChanged.FromString(newer)
    assert older.name == "support-intent"
    assert older.SerializeToString() == newer
