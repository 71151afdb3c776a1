"""How an objective's model sees its input: one preparation for training data and for served
requests, so the served model answers the question the evaluation scored.

Training text is made in two steps: ingest redacts an event's data and fills the objective's
text template (:func:`render`), label normalises it and cuts it to ``max_text_chars``
(:func:`model_text`); every example is prompted with the objective's instruction. An
:class:`InputContract` records all of it for the objective version an adapter learnt from;
the registry keeps it with the adapter, and serve prepares each request to the adapter with
:func:`prepare_text` and the contract's instruction, never with whatever is latest.
"""

from __future__ import annotations

import collections
import functools
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from tunewire.core.base import errors
from tunewire.core.state import objectives
from tunewire.core.text import normalising, redaction


class InputContract(BaseModel):
    """What an adapter was trained on: its instruction, redaction, text form and answers."""

    model_config = ConfigDict(frozen=True)

    task: objectives.Task
    instruction: str
    """The system message of every training example."""
    redaction: tuple[objectives.PiiKindName, ...]
    """The PII kinds replaced by placeholders in its training text."""
    max_text_chars: int
    """Where its training texts were cut, after normalisation."""
    source: objectives.Source
    """How an event's data became its text (the task endpoint fills the same template)."""
    labels: tuple[str, ...] = ()
    """The answers a classification adapter may give."""
    output: objectives.Output | None = None
    """The fields of an extraction adapter's JSON answer."""


def with_redaction_of(contract_: InputContract, spec: objectives.ObjectiveSpec) -> InputContract:
    """``contract_`` also redacting the kinds ``spec`` (the objective now) names: a kind an
    admin added after training is kept from the model too."""
    kinds = tuple(sorted(set(contract_.redaction) | set(spec.redaction.kinds)))
    return contract_.model_copy(update={"redaction": kinds})


def contract(spec: objectives.ObjectiveSpec) -> InputContract:
    """The contract of data prepared under ``spec`` (what label snapshots from it)."""
    return InputContract(
        task=spec.task,
        instruction=objectives.instruction(spec),
        redaction=tuple(spec.redaction.kinds),
        max_text_chars=spec.dataset.max_text_chars,
        source=spec.source,
        labels=tuple(spec.labels),
        output=spec.output,
    )


@functools.lru_cache(maxsize=32)
def redactor_for(kinds: frozenset[str]) -> redaction.Redactor:
    """One shared redactor per set of PII kinds (building one compiles its patterns)."""
    return redaction.Redactor(redaction.PiiKind(k) for k in sorted(kinds))


def render(source: objectives.Source, data: Mapping[str, Any]) -> str:
    """The text template filled from (already redacted) event data; a template field the
    data lacks is :class:`errors.InvalidRequest`."""
    missing = [name for name in source.template_fields() if data.get(name) is None]
    if missing:
        raise errors.InvalidRequest(
            f"the data needs the field(s) {', '.join(missing)} of the template {source.text!r}"
        )
    return source.text.format_map({name: _text(data[name]) for name in source.template_fields()})


def target(spec: objectives.ObjectiveSpec, fields: Mapping[str, Any]) -> str | None:
    """The answer an event's (redacted) data holds for a generation or extraction objective:
    the filled ``source.target`` template, or the output fields' ``source`` values as
    canonical JSON. None when the data does not hold a whole, valid answer."""
    if spec.output is not None:
        values = {
            name: fields.get(field.source)
            for name, field in spec.output.fields.items()
            if field.source is not None
        }
        return None if spec.output.problems(values) else spec.output.canonical(values)
    template = spec.source.target
    if template is None or any(fields.get(n) is None for n in spec.source.target_fields()):
        return None
    answer = template.format_map({n: _text(fields[n]) for n in spec.source.target_fields()})
    return answer.strip() or None


def human_answer(spec: objectives.ObjectiveSpec, answer: str) -> str:
    """A person's answer as it is stored and compared: a generation's text stripped, an
    extraction's JSON checked against the output and made canonical (so two annotators who
    agree give the same answer); :class:`errors.InvalidRequest` says what is wrong."""
    if spec.output is None:
        text = answer.strip()
        if not text:
            raise errors.InvalidRequest("the answer is empty")
        return text
    try:
        values = json.loads(answer)
    except ValueError as exc:
        raise errors.InvalidRequest(f"the answer is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise errors.InvalidRequest("the answer must be a JSON object of the output's fields")
    problems = spec.output.problems(values)
    if problems:
        raise errors.InvalidRequest(
            f"the answer does not fit the output: {'; '.join(problems)}",
            details={"schema": spec.output.json_schema()},
        )
    return spec.output.canonical(values)


def model_text(text: str, max_chars: int) -> str:
    """Text in the form every example has: normalised, then cut to ``max_chars``."""
    return normalising.normalise(text)[:max_chars]


def redact_text(text: str, contract_: InputContract, counts: collections.Counter[str]) -> str:
    """``text`` with the contract's PII kinds replaced (counted per kind in ``counts``)."""
    return redactor_for(frozenset(contract_.redaction)).redact_text(text, counts)


def prepare_text(text: str, contract_: InputContract, counts: collections.Counter[str]) -> str:
    """A served request's text as the adapter's training text was made: redacted with the
    contract's kinds, normalised, cut. Counts the replacements per kind in ``counts``."""
    return model_text(redact_text(text, contract_, counts), contract_.max_text_chars)


def prepare_fields(
    data: Mapping[str, Any], contract_: InputContract, counts: collections.Counter[str]
) -> str:
    """Event data as the adapter's training text was made from it: redacted field by field,
    the template filled, normalised and cut."""
    clean = redactor_for(frozenset(contract_.redaction)).redact_value(dict(data), counts)
    assert isinstance(clean, dict)
    return model_text(render(contract_.source, clean), contract_.max_text_chars)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
