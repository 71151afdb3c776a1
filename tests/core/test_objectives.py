"""What an objective spec accepts, and how a wrong one is reported field by field."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tunewire import samples
from tunewire.core.base import errors, settings, store
from tunewire.core.state import layout, objectives
from tunewire.stack import embedded

Spec = dict[str, Any]


def sample() -> Spec:
    return copy.deepcopy(samples.support_intent_spec())


def problems_of(document: Any) -> list[dict[str, str]]:
    with pytest.raises(errors.InvalidRequest) as raised:
        objectives.parse_spec(document)
    details = raised.value.details
    assert isinstance(details, list) and details
    assert raised.value.status == 422
    return details


def only_problem(document: Spec) -> dict[str, str]:
    details = problems_of(document)
    assert len(details) == 1, details
    return details[0]


def test_the_sample_spec_parses_with_its_values() -> None:
    spec = objectives.parse_spec(sample())

    assert spec.name == "support-intent"
    assert spec.task == "classification"
    assert spec.labels == ["refund", "shipping", "account", "warranty"]
    assert spec.source.event_type == "ticket.created"
    assert spec.source.id_field == "ticket_id"
    assert [rule.label for rule in spec.labelling.rules] == spec.labels
    assert spec.lora.target_modules == "all-linear"
    assert [(g.min, g.beat_champion_by) for g in spec.gates] == [(0.8, None), (None, 0.01)]
    # Defaults fill what the sample leaves out: every PII kind is redacted.
    assert spec.redaction.kinds == list(objectives.PII_KINDS)


def test_required_fields_cover_template_id_and_typed_fields() -> None:
    source = objectives.Source(
        event_type="ticket.created",
        text="{subject}\n{body}",
        id_field="ticket_id",
        fields={"channel": "string", "priority": "integer"},
    )

    assert source.template_fields() == ("subject", "body")
    assert source.required_fields() == {
        "subject": "string",
        "body": "string",
        "ticket_id": "string",
        "channel": "string",
        "priority": "integer",
    }


def test_declared_field_types_override_the_string_default() -> None:
    source = objectives.Source(
        event_type="order.placed", text="{total}", id_field="order_id", fields={"total": "number"}
    )

    assert source.required_fields() == {"total": "number", "order_id": "string"}


def set_at(path: str, value: Any) -> Callable[[Spec], None]:
    """A change that sets a (dotted) field of the sample spec."""

    def change(spec: Spec) -> None:
        *parents, last = path.split(".")
        target: Any = spec
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return change


WRONG_FIELDS = [
    pytest.param(set_at("name", "Support_Intent"), "name", "pattern", id="name-pattern"),
    pytest.param(set_at("name", "-support"), "name", "pattern", id="name-leading-dash"),
    pytest.param(set_at("name", "a" * 64), "name", "pattern", id="name-too-long"),
    pytest.param(set_at("owner", "me"), "owner", "Extra inputs", id="unknown-top-level-key"),
    pytest.param(
        set_at("source.schema", "x"), "source.schema", "Extra inputs", id="unknown-nested-key"
    ),
    pytest.param(
        set_at("labelling.rules.0.weight", 2),
        "labelling.rules.0.weight",
        "Extra inputs",
        id="unknown-key-in-rule",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping", "any": ["late"], "regex": "late"}),
        "labelling.rules.1",
        "exactly one of",
        id="rule-with-two-kinds",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping"}),
        "labelling.rules.1",
        "exactly one of",
        id="rule-with-no-kind",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping", "field": "channel"}),
        "labelling.rules.1",
        "field and equals go together",
        id="rule-field-without-equals",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping", "regex": "(late"}),
        "labelling.rules.1",
        "regex does not compile: missing )",
        id="regex-does-not-compile",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping", "regex": r"(?<!not )late"}),
        "labelling.rules.1",
        "no lookaround and no backreferences",
        id="regex-needs-backtracking",
    ),
    pytest.param(
        set_at("labelling.rules.1", {"label": "shipping", "regex": "a" * 1001}),
        "labelling.rules.1",
        "the limit is 1000",
        id="regex-too-long",
    ),
    pytest.param(
        set_at("labelling.rules", [{"label": "shipping", "any": [f"w{i}"]} for i in range(201)]),
        "labelling.rules",
        "at most 200",
        id="too-many-rules",
    ),
    pytest.param(
        set_at("gates.0", {"metric": "accuracy", "min": 0.8, "beat_champion_by": 0.01}),
        "gates.0",
        "exactly one of: min, beat_champion_by",
        id="gate-with-both-conditions",
    ),
    pytest.param(
        set_at("gates.0", {"metric": "accuracy"}),
        "gates.0",
        "exactly one of: min, beat_champion_by",
        id="gate-with-no-condition",
    ),
    pytest.param(
        set_at("source.text", "no placeholders here"),
        "source.text",
        "at least one {field}",
        id="template-without-fields",
    ),
    pytest.param(
        set_at("source.text", "{customer.email}"),
        "source.text",
        "plain field name",
        id="template-attribute-access",
    ),
    pytest.param(
        set_at("source.text", "{items[0]}"),
        "source.text",
        "plain field name",
        id="template-index-access",
    ),
    pytest.param(
        set_at("source.text", "{}"), "source.text", "plain field name", id="template-positional"
    ),
    pytest.param(
        set_at("source.text", "{subject"), "source.text", "does not parse", id="template-unclosed"
    ),
    pytest.param(set_at("lora.r", 0), "lora.r", "greater than or equal to 1", id="lora-r-zero"),
    pytest.param(
        set_at("dataset.eval_fraction", 1),
        "dataset.eval_fraction",
        "less than 1",
        id="eval-fraction-one",
    ),
    pytest.param(
        set_at("dataset.eval_fraction", 0),
        "dataset.eval_fraction",
        "greater than 0",
        id="eval-fraction-zero",
    ),
    pytest.param(
        set_at("redaction", {"kinds": ["email", "ssn"]}),
        "redaction.kinds.1",
        "'email', 'phone', 'card', 'iban' or 'ip'",
        id="unknown-redaction-kind",
    ),
    pytest.param(set_at("task", "ranking"), "task", "classification", id="unknown-task"),
    pytest.param(
        set_at("source.fields", {"channel": "text"}),
        "source.fields.channel",
        "string",
        id="unknown-field-type",
    ),
]


@pytest.mark.parametrize(("change", "field", "message"), WRONG_FIELDS)
def test_a_wrong_field_is_reported_with_its_path(
    change: Callable[[Spec], None], field: str, message: str
) -> None:
    document = sample()
    change(document)

    problem = only_problem(document)

    assert problem["field"] == field
    assert message in problem["message"]


@pytest.mark.parametrize(
    "template",
    ["{subject:{body}}", "{subject:d}", "{body:>{subject}}"],
    ids=["nested-field-in-format-spec", "numeric-format-of-text", "nested-width"],
)
def test_a_template_that_cannot_be_filled_from_text_fields_is_refused(template: str) -> None:
    # Ingest fills the template with str.format_map from the declared fields; a format spec
    # that needs an undeclared field or a number would fail on every event instead.
    document = sample()
    document["source"]["text"] = template

    problem = only_problem(document)

    assert problem["field"] == "source.text"


def test_a_missing_required_field_is_named() -> None:
    document = sample()
    del document["source"]["id_field"]
    del document["base_model"]

    fields = {p["field"] for p in problems_of(document)}

    assert fields == {"source.id_field", "base_model"}


def test_every_wrong_field_is_listed_and_summarised_in_the_message() -> None:
    document = sample()
    document["name"] = "Bad Name"
    document["lora"]["r"] = 0
    document["dataset"]["eval_fraction"] = 1.5

    with pytest.raises(errors.InvalidRequest) as raised:
        objectives.parse_spec(document)

    fields = [p["field"] for p in raised.value.details]
    assert sorted(fields) == ["dataset.eval_fraction", "lora.r", "name"]
    for field in fields:
        assert field in raised.value.message
    assert raised.value.body()["details"] == raised.value.details


SPEC_LEVEL = [
    pytest.param(
        set_at("labels", ["refund"]), "at least two labels", id="classification-one-label"
    ),
    pytest.param(
        set_at("labels", ["refund", "shipping", "account", "warranty", "refund"]),
        "labels must be unique",
        id="duplicate-labels",
    ),
    pytest.param(
        set_at("labelling.rules.0.label", "billing"),
        "not in 'labels': billing",
        id="rule-votes-for-unknown-label",
    ),
]


@pytest.mark.parametrize(("change", "message"), SPEC_LEVEL)
def test_label_consistency_is_checked_across_fields(
    change: Callable[[Spec], None], message: str
) -> None:
    document = sample()
    change(document)

    problem = only_problem(document)

    assert problem["field"] == "(spec)"
    assert message in problem["message"]


def test_a_generation_objective_needs_no_labels() -> None:
    document = sample()
    document["task"] = "generation"
    document["labels"] = []
    document["labelling"] = {}

    spec = objectives.parse_spec(document)

    assert spec.task == "generation"
    assert spec.labels == []


@pytest.mark.parametrize("document", [None, [], "name: x", 42], ids=repr)
def test_a_document_that_is_not_a_mapping_is_refused(document: Any) -> None:
    with pytest.raises(errors.InvalidRequest, match="must be a mapping"):
        objectives.parse_spec(document)


def test_a_parsed_spec_is_immutable() -> None:
    spec = objectives.parse_spec(sample())

    with pytest.raises(ValueError, match="frozen"):
        spec.name = "other"


class CountingStore(store.ArtifactStore):
    """The stack's bucket, counting the objects read."""

    reads: list[str]

    def get_json(self, key: str) -> Any:
        self.reads.append(key)
        return super().get_json(key)


def test_a_reload_lists_once_and_reads_only_versions_it_has_not_read(
    stack: embedded.EmbeddedStack, artifacts: store.ArtifactStore
) -> None:
    # ``artifacts`` puts the stack's credentials in the environment.
    assert artifacts.bucket == stack.bucket
    counting = CountingStore(
        settings.S3Settings(bucket=stack.bucket, endpoint_url=stack.s3_endpoint_url)
    )
    counting.reads = []
    prefix = f"cat-{uuid.uuid4().hex[:6]}"
    catalog = objectives.ObjectiveCatalog(counting, cache_seconds=0)
    for n in range(3):
        spec = sample()
        spec["name"] = f"{prefix}-{n}"
        catalog.register(objectives.parse_spec(spec), actor="test")
    first = {v.name: v.version for v in catalog.latest_all() if v.name.startswith(prefix)}
    assert first == {f"{prefix}-0": 1, f"{prefix}-1": 1, f"{prefix}-2": 1}

    counting.reads.clear()
    catalog.retire(f"{prefix}-1", actor="test")
    counting.reads.clear()
    again = {v.name: v for v in catalog.latest_all() if v.name.startswith(prefix)}
    assert {name: v.version for name, v in again.items()} == {
        f"{prefix}-0": 1,
        f"{prefix}-1": 2,
        f"{prefix}-2": 1,
    }
    assert again[f"{prefix}-1"].status == "retired"
    # Only the new version was read; the others are immutable and known.
    assert [key for key in counting.reads if prefix in key] == [
        layout.objective_version(f"{prefix}-1", 2)
    ]
