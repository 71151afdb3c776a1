"""Objectives: the versioned spec every service reads, stored in S3.

An objective says which events to learn from, how to label them, when to build datasets,
how to train and which gates an adapter must pass. Each change is a new immutable version
(:func:`layout.objective_version`) written only if absent, so two writers can never both
create the same version. The newest version is the current one; retiring an objective is a
new version with status ``retired``.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import string
import threading
import time
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunewire.core.base import errors, patterns, store
from tunewire.core.state import layout

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_RULES = 200
"""Most labelling rules an objective may hold: every rule runs on every record."""
PiiKindName = Literal["email", "phone", "card", "iban", "ip"]
PII_KINDS: tuple[PiiKindName, ...] = typing.get_args(PiiKindName)
FieldType = Literal["string", "integer", "number", "boolean", "object", "array"]
Task = Literal["classification", "generation", "extraction"]
OutputType = Literal["string", "integer", "number", "boolean"]
_PLAIN_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Which events feed the objective and how an event becomes text."""

    event_type: str = Field(min_length=1)
    """CloudEvents ``type`` of the business events, e.g. ``ticket.created``."""
    text: str = Field(min_length=1)
    """Template of the text to learn from, with ``{field}`` placeholders from the event data."""
    id_field: str = Field(min_length=1)
    """Data field that identifies the source item (drives the train/eval split)."""
    fields: dict[str, FieldType] = {}
    """Types of further data fields the events must carry."""
    target: str | None = None
    """Generation: template of the answer from the event data (e.g. ``{resolution}``, the
    agent's reply in a closed ticket), so history becomes training pairs; events without
    those fields go to people (``labelling.human_queue``) or are left out."""

    @field_validator("text")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        try:
            parts = [p for p in string.Formatter().parse(value) if p[1] is not None]
        except ValueError as exc:
            raise ValueError(f"text template does not parse: {exc}") from exc
        if not parts:
            raise ValueError("text template must reference at least one {field}")
        for _, name, format_spec, conversion in parts:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or ""):
                raise ValueError(f"text template field {name!r} must be a plain field name")
            if format_spec or conversion:
                raise ValueError(
                    f"text template field {name!r} takes no format spec or conversion; "
                    "write {" + str(name) + "}"
                )
        return value

    @field_validator("target")
    @classmethod
    def _target_parses(cls, value: str | None) -> str | None:
        return None if value is None else cls._template_parses(value)

    def template_fields(self) -> tuple[str, ...]:
        """Fields referenced by the text template, in order."""
        return _template_fields(self.text)

    def target_fields(self) -> tuple[str, ...]:
        """Fields referenced by the answer's template (none without one)."""
        return _template_fields(self.target) if self.target else ()

    def required_fields(self) -> dict[str, FieldType]:
        """Every field an event must carry, with its type."""
        required: dict[str, FieldType] = dict.fromkeys(self.template_fields(), "string")
        required.setdefault(self.id_field, "string")
        required.update(self.fields)
        return required


@functools.lru_cache(maxsize=256)
def _template_fields(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


class Rule(_Strict):
    """A labelling rule: votes for ``label`` when it matches, abstains otherwise."""

    label: str
    any: list[str] | None = None
    """Case-insensitive keywords; any one present is a match."""
    regex: str | None = None
    field: str | None = None
    equals: str | None = None
    """With ``field``: the data field must equal this value."""
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [
            self.any is not None,
            self.regex is not None,
            self.field is not None or self.equals is not None,
            self.min_length is not None or self.max_length is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError(
                "a rule needs exactly one of: any, regex, field+equals, min/max_length"
            )
        if (self.field is None) != (self.equals is None):
            raise ValueError("field and equals go together")
        if self.regex is not None:
            patterns.compile_rule(self.regex)
        return self


class Keep(_Strict):
    """A quality rule over the event data: records that fail it are left out of the data
    (e.g. ``{field: csat, min: 4}`` keeps only replies customers rated 4 or better)."""

    field: str = Field(min_length=1)
    equals: str | int | float | bool | None = None
    min: float | None = None
    """The field must be a number at least this."""
    max: float | None = None
    """The field must be a number at most this."""

    @model_validator(mode="after")
    def _one_condition(self) -> Keep:
        if self.equals is None and self.min is None and self.max is None:
            raise ValueError("a keep rule needs equals, min or max")
        if self.equals is not None and (self.min is not None or self.max is not None):
            raise ValueError("a keep rule compares with equals, or with min/max, not both")
        return self

    def passes(self, fields: Mapping[str, Any]) -> bool:
        """Whether a record's data meets the rule (a missing field never does)."""
        value = fields.get(self.field)
        if self.equals is not None:
            return value == self.equals
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Labelling(_Strict):
    rules: list[Rule] = Field(default=[], max_length=MAX_RULES)
    min_agreement: int = Field(default=1, ge=1)
    """Votes a label needs (without a conflicting vote) to be taken."""
    human_queue: bool = False
    """Send conflicts and abstentions to the human queue instead of dropping them."""
    labels_per_item: int = Field(default=1, ge=1, le=10)
    keep: list[Keep] = Field(default=[], max_length=MAX_RULES)
    """Quality rules every record must pass to become an example (any task)."""


class DatasetPolicy(_Strict):
    eval_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_examples: int = Field(default=200, ge=1)
    """Labelled examples needed for the first snapshot."""
    retrain_every: int = Field(default=500, ge=1)
    """New labelled examples that trigger the next snapshot."""
    max_text_chars: int = Field(default=4000, ge=16)


class Lora(_Strict):
    r: int = Field(default=16, ge=1, le=1024)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = ["q_proj", "v_proj"]


class Training(_Strict):
    epochs: int = Field(default=3, ge=1, le=100)
    lr: float = Field(default=2e-4, gt=0, lt=1)
    batch_size: int = Field(default=8, ge=1)
    max_seq_len: int = Field(default=512, ge=16)
    gradient_accumulation: int = Field(default=1, ge=1)
    gpu: int = Field(default=1, ge=0)


class Gate(_Strict):
    """A condition an adapter must meet: an absolute minimum or a margin over the champion."""

    metric: str
    min: float | None = None
    beat_champion_by: float | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> Gate:
        if (self.min is None) == (self.beat_champion_by is None):
            raise ValueError("a gate needs exactly one of: min, beat_champion_by")
        return self


class OutputField(_Strict):
    """One field of an extraction's answer."""

    type: OutputType = "string"
    enum: list[str] | None = Field(default=None, min_length=1)
    """With ``string``: the only values allowed."""
    required: bool = True
    description: str = ""
    source: str | None = None
    """The event data field that holds its value in history (redacted like the rest); without
    one, people write it."""

    @model_validator(mode="after")
    def _enum_of_strings(self) -> OutputField:
        if self.enum is not None and self.type != "string":
            raise ValueError("enum goes with type string")
        if self.enum is not None and len(set(self.enum)) != len(self.enum):
            raise ValueError("enum values must be unique")
        return self

    def json_schema(self) -> dict[str, Any]:
        """The field's JSON schema."""
        schema: dict[str, Any] = {"type": self.type}
        if self.enum is not None:
            schema["enum"] = list(self.enum)
        if self.description:
            schema["description"] = self.description
        return schema

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the field's type (and is one of its enum)."""
        if self.type == "boolean":
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.type == "integer":
            return isinstance(value, int)
        if self.type == "number":
            return isinstance(value, int | float)
        return isinstance(value, str) and (self.enum is None or value in self.enum)


class Output(_Strict):
    """An extraction's answer: one JSON object with these fields, in this order."""

    fields: dict[str, OutputField] = Field(min_length=1, max_length=64)

    @field_validator("fields")
    @classmethod
    def _plain_names(cls, value: dict[str, OutputField]) -> dict[str, OutputField]:
        wrong = [name for name in value if not re.fullmatch(_PLAIN_NAME, name)]
        if wrong:
            raise ValueError(f"output field names must be plain identifiers: {', '.join(wrong)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema every answer is valid against (and served answers held to)."""
        return {
            "type": "object",
            "properties": {name: f.json_schema() for name, f in self.fields.items()},
            "required": [name for name, f in self.fields.items() if f.required],
            "additionalProperties": False,
        }

    def canonical(self, values: Mapping[str, Any]) -> str:
        """The training target: compact JSON in the schema's field order, optional fields
        without a value left out (what a constrained answer looks like)."""
        ordered = {name: values[name] for name in self.fields if values.get(name) is not None}
        return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))

    def problems(self, values: Mapping[str, Any]) -> list[str]:
        """What keeps ``values`` from being a valid answer (empty when it is one)."""
        found = [
            f"{name} is missing"
            for name, f in self.fields.items()
            if f.required and values.get(name) is None
        ]
        found += [
            f"{name} is not a valid {f.type}" + (f" (one of {', '.join(f.enum)})" if f.enum else "")
            for name, f in self.fields.items()
            if values.get(name) is not None and not f.accepts(values[name])
        ]
        found += [
            f"{name} is not a field of the output" for name in values if name not in self.fields
        ]
        return found


class Redaction(_Strict):
    kinds: list[PiiKindName] = list(PII_KINDS)
    """PII kinds replaced by placeholders before anything is stored or forwarded."""


class Serving(_Strict):
    """How serve treats requests to the objective's models."""

    prepare_input: bool = True
    """Prepare every request as the adapter's training data was prepared: its PII kinds
    redacted (no raw PII reaches the model or its logs), the text normalised and cut, and its
    instruction as the system message when the client sends none. Off passes requests as
    sent; only an admin may turn it off."""


class ObjectiveSpec(_Strict):
    """The whole objective as a user writes it (YAML or JSON)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    """Lower-case DNS-style name; also the served model alias."""
    description: str = ""
    task: Task = "classification"
    source: Source
    labels: list[str] = []
    output: Output | None = None
    """Extraction: the answer's fields."""
    labelling: Labelling = Labelling()
    dataset: DatasetPolicy = DatasetPolicy()
    base_model: str = Field(min_length=1)
    """A Hugging Face id, an ``s3://`` prefix or a local path."""
    lora: Lora = Lora()
    training: Training = Training()
    gates: list[Gate] = []
    approval: Literal["auto", "manual"] = "auto"
    redaction: Redaction = Redaction()
    serving: Serving = Serving()

    @model_validator(mode="after")
    def _labels_consistent(self) -> ObjectiveSpec:
        if self.task == "classification" and len(self.labels) < 2:
            raise ValueError("a classification objective needs at least two labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        unknown = sorted({r.label for r in self.labelling.rules} - set(self.labels))
        if unknown:
            raise ValueError(f"rules vote for labels not in 'labels': {', '.join(unknown)}")
        if (self.task == "extraction") != (self.output is not None):
            raise ValueError("an extraction objective needs 'output', and only it has one")
        if self.source.target is not None and self.task != "generation":
            raise ValueError("source.target (the answer's template) is for generation objectives")
        if self.task != "classification" and self.labelling.rules:
            raise ValueError(
                "labelling rules vote for labels; a generation or extraction objective takes its "
                "answers from the events (source.target, output.fields.*.source) or people, and "
                "keeps the good ones with labelling.keep"
            )
        return self


class ObjectiveVersion(BaseModel):
    """One stored version of an objective."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    status: Literal["active", "retired"]
    spec: ObjectiveSpec
    created_at: datetime.datetime
    created_by: str


def instruction(spec: ObjectiveSpec) -> str:
    """The system message of every example, naming the objective's task and its labels.

    Label writes it into every example and the snapshot's manifest, because the served
    model must be prompted exactly as it was trained.
    """
    described = spec.description.strip() or f"The {spec.name} objective."
    if spec.task == "classification":
        return (
            f"{described}\nClassify the user's text. "
            f"Answer with exactly one of these labels: {', '.join(spec.labels)}."
        )
    if spec.output is not None:
        fields = "; ".join(_described_field(name, f) for name, f in spec.output.fields.items())
        return (
            f"{described}\nExtract from the user's text one JSON object with these fields: "
            f"{fields}."
        )
    suffix = f"\nPossible answers include: {', '.join(spec.labels)}." if spec.labels else ""
    return f"{described}\nWrite the answer to the user's text.{suffix}"


def _described_field(name: str, field: OutputField) -> str:
    kind = f"one of {', '.join(field.enum)}" if field.enum else field.type
    optional = "" if field.required else ", optional"
    about = f" ({field.description})" if field.description else ""
    return f"{name}: {kind}{optional}{about}"


def parse_spec(document: Any) -> ObjectiveSpec:
    """Validate a parsed spec; :class:`errors.InvalidRequest` lists every wrong field."""
    if not isinstance(document, dict):
        raise errors.InvalidRequest("an objective spec must be a mapping of fields")
    try:
        return ObjectiveSpec.model_validate(document)
    except pydantic.ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(spec)", "message": e["msg"]}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        raise errors.InvalidRequest(
            f"invalid objective spec: {summary}", details=problems
        ) from None


class ObjectiveCatalog:
    """Objective versions in S3, with a short-lived cache for the hot path."""

    def __init__(self, artifacts: store.ArtifactStore, *, cache_seconds: float = 10.0) -> None:
        self._store = artifacts
        self._cache_seconds = cache_seconds
        self._current: Mapping[str, ObjectiveVersion] = types.MappingProxyType({})
        self._documents: dict[str, ObjectiveVersion] = {}
        """The newest version of each objective by its key, as last read."""
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()

    # -- writes ---------------------------------------------------------------------------

    def register(self, spec: ObjectiveSpec, *, actor: str) -> ObjectiveVersion:
        """Create version 1; :class:`errors.Conflict` if the objective exists."""
        if self.versions(spec.name):
            raise errors.Conflict(
                f"objective {spec.name!r} exists; send a new version with PUT instead"
            )
        return self._write(spec, version=1, status="active", actor=actor)

    def update(self, name: str, spec: ObjectiveSpec, *, actor: str) -> ObjectiveVersion:
        """Store ``spec`` as the next version of ``name``."""
        if spec.name != name:
            raise errors.InvalidRequest(f"the spec names {spec.name!r}, not {name!r}")
        latest = self.get(name)
        return self._write(spec, version=latest.version + 1, status="active", actor=actor)

    def retire(self, name: str, *, actor: str) -> ObjectiveVersion:
        """A new version that stops new events and training for the objective."""
        latest = self.get(name)
        if latest.status == "retired":
            return latest
        return self._write(latest.spec, version=latest.version + 1, status="retired", actor=actor)

    def _write(
        self, spec: ObjectiveSpec, *, version: int, status: Literal["active", "retired"], actor: str
    ) -> ObjectiveVersion:
        stored = ObjectiveVersion(
            name=spec.name,
            version=version,
            status=status,
            spec=spec,
            created_at=datetime.datetime.now(datetime.UTC),
            created_by=actor,
        )
        try:
            self._store.put_json(
                layout.objective_version(spec.name, version),
                stored.model_dump(mode="json"),
                only_if_absent=True,
            )
        except errors.Conflict:
            raise errors.Conflict(
                f"objective {spec.name!r} version {version} was written concurrently; retry"
            ) from None
        with self._lock:
            self._current = types.MappingProxyType({**self._current, spec.name: stored})
        return stored

    # -- reads ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[int]:
        """Stored version numbers of an objective, ascending."""
        prefix = layout.objective_versions(name) + "v"
        return sorted(
            int(k[len(prefix) : -len(".json")])
            for k in self._store.list_keys(prefix)
            if k.endswith(".json")
        )

    def get(self, name: str, version: int | None = None) -> ObjectiveVersion:
        """One version (the newest by default); :class:`errors.NotFound` when absent."""
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise errors.NotFound(f"no objective named {name!r}")
            version = versions[-1]
        try:
            document = self._store.get_json(layout.objective_version(name, version))
        except errors.NotFound:
            raise errors.NotFound(f"objective {name!r} has no version {version}") from None
        return ObjectiveVersion.model_validate(document)

    def latest_all(self) -> list[ObjectiveVersion]:
        """The newest version of every objective, by name.

        One listing finds every objective's newest version key (versions are zero-padded, so
        the last key of a name is its newest); only a version not read before is fetched, as
        a stored version never changes. A reload costs one listing, not two requests an
        objective.
        """
        newest: dict[str, str] = {}
        for key in self._store.list_keys(layout.OBJECTIVES):
            name, _, leaf = key[len(layout.OBJECTIVES) :].partition("/")
            if leaf.startswith("v") and leaf.endswith(".json"):
                newest[name] = max(newest.get(name, ""), key)
        with self._lock:
            known = self._documents
        found = {
            key: known.get(key) or ObjectiveVersion.model_validate(self._store.get_json(key))
            for key in (newest[name] for name in sorted(newest))
        }
        with self._lock:
            self._documents = found
        return list(found.values())

    def current(self, *, fresher_than: float | None = None) -> Mapping[str, ObjectiveVersion]:
        """Every objective's newest version, reloaded when older than the cache period.

        ``fresher_than`` (a ``time.monotonic()`` value, e.g. when an event was received)
        forces a reload unless one started after that moment: an objective registered just
        before its first event is then always found, and a burst of events that name an
        unknown objective costs one reload, not one each. The mapping returned is read-only
        and never changes (a reload replaces it), so the hot path takes it without copying.
        """
        if self._fresh(fresher_than):
            return self._current
        with self._reload_lock:
            if self._fresh(fresher_than):  # another thread reloaded while we waited
                return self._current
            started = time.monotonic()
            try:
                loaded = {o.name: o for o in self.latest_all()}
            except errors.Unavailable:
                if self._loaded_at == float("-inf"):
                    raise
                # S3 is down: keep serving the last known objectives until it is back.
                return self._current
            with self._lock:
                self._current = types.MappingProxyType(loaded)
                self._loaded_at = started
                return self._current

    def lookup(self, name: str, *, fresher_than: float | None = None) -> ObjectiveVersion | None:
        """The current version of ``name``; unknown names are re-checked as for ``current``."""
        found = self.current().get(name)
        if found is None and fresher_than is not None:
            found = self.current(fresher_than=fresher_than).get(name)
        return found

    def _fresh(self, fresher_than: float | None) -> bool:
        if fresher_than is not None:
            return self._loaded_at >= fresher_than
        return time.monotonic() - self._loaded_at < self._cache_seconds
