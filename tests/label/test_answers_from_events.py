"""Generation and extraction objectives take their answers from the events: a generation's
``source.target`` template, an extraction's output fields mapped from event fields (as
canonical JSON); quality rules (``labelling.keep``) leave the poor ones out, records without a
whole answer go to people, and duplicates are judged on the input with its answer."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pydantic
import pytest

from tunewire.contracts.v1 import records_pb2
from tunewire.core.base import errors
from tunewire.core.state import model_input, objectives
from tunewire.label import examples, labelling

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)

REPLIES: dict[str, Any] = {
    "name": "support-replies",
    "task": "generation",
    "source": {
        "event_type": "ticket.closed",
        "text": "{subject}\n{body}",
        "id_field": "ticket_id",
        "target": "{resolution}",
    },
    "labelling": {"keep": [{"field": "csat", "min": 4}], "human_queue": True},
    "base_model": "builtin://tiny-llama",
}
REPORTS: dict[str, Any] = {
    "name": "maintenance-report",
    "task": "extraction",
    "source": {"event_type": "maintenance.logged", "text": "{log}", "id_field": "entry_id"},
    "output": {
        "fields": {
            "component": {"source": "component"},
            "severity": {"enum": ["low", "medium", "high"], "source": "severity"},
            "downtime_hours": {"type": "number", "required": False, "source": "downtime"},
        }
    },
    "base_model": "builtin://tiny-llama",
}


def version(document: dict[str, Any]) -> objectives.ObjectiveVersion:
    spec = objectives.parse_spec(document)
    return objectives.ObjectiveVersion(
        name=spec.name, version=1, status="active", spec=spec, created_at=NOW, created_by="test"
    )


def record(source_id: str, text: str, **fields: Any) -> records_pb2.Record:
    return records_pb2.Record(
        objective="x",
        objective_version=1,
        source_id=source_id,
        text=text,
        fields_json=json.dumps(fields),
        event_id=f"e-{source_id}",
    )


def outcome(
    labeller: labelling.Labeller, objective: objectives.ObjectiveVersion, one: records_pb2.Record
) -> labelling.Outcome:
    return labeller.label(one, record_id=f"r-{one.source_id}", objective=objective, now=NOW)


@pytest.fixture
def labeller() -> labelling.Labeller:
    return labelling.Labeller(near_threshold=0.8, near_capacity=1000)


def test_a_generation_learns_the_reply_its_event_holds_when_it_passes_the_keep_rules(
    labeller: labelling.Labeller,
) -> None:
    replies = version(REPLIES)
    good = record("T-1", "Late parcel\nWhere is it?", resolution="It ships today.", csat=5)
    poor = record("T-2", "Broken kettle\nHelp", resolution="Try again.", csat=2)
    unrated = record("T-3", "Login\nCannot sign in", resolution="Reset it.")
    open_ticket = record("T-4", "Refund\nWhere is my money", csat=5)

    learnt = outcome(labeller, replies, good)
    assert isinstance(learnt, labelling.Labelled)
    example = learnt.example
    assert (example.text, example.label) == ("Late parcel Where is it?", "It ships today.")
    assert (example.label_source, example.voters) == ("event", ("event",))
    assert examples.Example.from_json(example.to_json()) == example
    # A reply the keep rules refuse is a draft for people to improve; without one, people
    # write the answer; without the human queue, both are left out.
    for refused, draft in ((poor, "Try again."), (unrated, "Reset it.")):
        queued = outcome(labeller, replies, refused)
        assert isinstance(queued, labelling.Queued), queued
        assert (queued.task.reason, queued.task.hints) == ("kept_out", (("draft", draft),))
    queued = outcome(labeller, replies, open_ticket)
    assert isinstance(queued, labelling.Queued)
    assert (queued.task.reason, queued.task.hints) == ("no_target", ())
    alone = version({**REPLIES, "labelling": {"keep": REPLIES["labelling"]["keep"]}})
    fresh = labelling.Labeller(near_threshold=0.8, near_capacity=1000)
    assert outcome(fresh, alone, poor) == labelling.Dropped("kept_out")
    assert outcome(fresh, alone, open_ticket) == labelling.Dropped("no_target")


def test_duplicates_of_a_generation_are_judged_with_their_answer(
    labeller: labelling.Labeller,
) -> None:
    replies = version(REPLIES)
    asked = "Late parcel\nWhere is it?"
    first = record("T-1", asked, resolution="It ships today.", csat=5)
    same = record("T-2", asked, resolution="It ships today.", csat=5)
    answered_otherwise = record("T-3", asked, resolution="We refunded you instead.", csat=5)

    assert isinstance(outcome(labeller, replies, first), labelling.Labelled)
    assert outcome(labeller, replies, same) == labelling.Dropped("duplicate_text")
    assert isinstance(outcome(labeller, replies, answered_otherwise), labelling.Labelled)


def test_an_extraction_learns_the_canonical_json_of_its_mapped_fields(
    labeller: labelling.Labeller,
) -> None:
    reports = version(REPORTS)
    logged = record(
        "M-1", "Pump 3 seal leaking", severity="high", component="pump seal", downtime=2.5
    )
    learnt = outcome(labeller, reports, logged)
    assert isinstance(learnt, labelling.Labelled)
    assert learnt.example.label == (
        '{"component":"pump seal","severity":"high","downtime_hours":2.5}'
    )
    # An optional field without a value is left out; a value outside the schema is no answer.
    short = outcome(labeller, reports, record("M-2", "Belt worn", component="belt", severity="low"))
    assert isinstance(short, labelling.Labelled)
    assert short.example.label == '{"component":"belt","severity":"low"}'
    wrong = record("M-3", "Fan noisy", component="fan", severity="urgent")
    assert outcome(labeller, reports, wrong) == labelling.Dropped("no_target")


def test_the_spec_says_what_each_task_needs() -> None:
    spec = objectives.parse_spec(REPORTS)
    assert spec.output is not None
    assert spec.output.json_schema() == {
        "type": "object",
        "properties": {
            "component": {"type": "string"},
            "severity": {"type": "string", "enum": ["low", "medium", "high"]},
            "downtime_hours": {"type": "number"},
        },
        "required": ["component", "severity"],
        "additionalProperties": False,
    }
    said = objectives.instruction(spec)
    assert (
        "severity: one of low, medium, high" in said and "downtime_hours: number, optional" in said
    )
    assert model_input.contract(spec).output == spec.output

    wrong = [
        {**REPORTS, "output": None},  # extraction without output
        {**REPLIES, "output": REPORTS["output"]},  # output on a generation
        {**REPORTS, "source": {**REPORTS["source"], "target": "{log}"}},  # target off generation
        {**REPLIES, "labelling": {"rules": [{"label": "x", "any": ["y"]}]}},  # votes
        {**REPLIES, "labelling": {"keep": [{"field": "csat"}]}},  # a keep rule without a test
        {**REPORTS, "output": {"fields": {"bad name": {}}}},
        {**REPORTS, "output": {"fields": {"n": {"type": "integer", "enum": ["1"]}}}},
    ]
    for document in wrong:
        with pytest.raises(pydantic.ValidationError):
            objectives.ObjectiveSpec.model_validate(document)


def test_peoples_answers_are_checked_and_made_canonical() -> None:
    reports, replies = objectives.parse_spec(REPORTS), objectives.parse_spec(REPLIES)
    answer = '{ "severity": "high", "component": "pump seal" }'
    assert model_input.human_answer(reports, answer) == (
        '{"component":"pump seal","severity":"high"}'
    )
    assert model_input.human_answer(replies, "  It ships today.\n") == "It ships today."
    for wrong, words in (
        ("not json", "not JSON"),
        ("[1]", "a JSON object"),
        ('{"component": "pump"}', "severity is missing"),
        ('{"component": "pump", "severity": "urgent"}', "severity is not a valid string"),
        ('{"component": "pump", "severity": "low", "colour": "red"}', "colour is not a field"),
    ):
        with pytest.raises(errors.InvalidRequest, match=words):
            model_input.human_answer(reports, wrong)
    with pytest.raises(errors.InvalidRequest, match="empty"):
        model_input.human_answer(replies, "  ")
