"""Gates: does a candidate adapter meet its objective's bar? Pure functions, no I/O.

An objective lists gates in its spec; each is an absolute minimum (``min``) or a margin by
which the candidate must beat the current champion (``beat_champion_by``). Every gate is
checked and reported, in spec order, with the number it was compared against, so a rejection
says exactly which gates failed and by how much. "Beating" respects the metric's direction:
for losses (``eval_loss``, ``perplexity``, and their ``lift.`` over the base model) the
candidate must be lower by the margin. Any metric the evaluator reports can be gated, by the
name it has in ``metrics.json`` (``field_accuracy.severity``, ``lift.accuracy``, …).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence

from tunewire.contracts.v1 import evaluations_pb2
from tunewire.core.state import objectives

LOWER_IS_BETTER = frozenset({"eval_loss", "perplexity"})
"""Metrics the evaluator reports where a smaller value is better."""
LIFT = "lift."
"""The evaluator's prefix of an adapter's gain over the base model (``lift.accuracy``)."""
TOLERANCE = 1e-9
"""Slack on comparisons, so that 0.81 passes "beat 0.80 by 0.01" despite float rounding."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One gate's outcome and, in words, why."""

    result: evaluations_pb2.GateResult
    note: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Every gate's outcome, in spec order."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True when every gate held (and when there are none)."""
        return all(c.result.passed for c in self.checks)

    @property
    def results(self) -> list[evaluations_pb2.GateResult]:
        """The gate results as the evaluations contract carries them."""
        return [c.result for c in self.checks]

    @property
    def failed(self) -> list[Check]:
        """The gates that did not hold."""
        return [c for c in self.checks if not c.result.passed]

    def reason(self) -> str:
        """The failed gates in words, or that all passed (with any gate passed by default)."""
        if not self.checks:
            return "the objective has no gates"
        if self.failed:
            return "failed gates: " + "; ".join(c.note for c in self.failed)
        defaults = [c.note for c in self.checks if "no champion" in c.note]
        return f"passed every gate ({'; '.join(defaults)})" if defaults else "passed every gate"


def check(
    gates: Sequence[objectives.Gate],
    *,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> Verdict:
    """Check each gate against the candidate's metrics (and the champion's, for margins).

    ``champion`` is None when the objective has no champion yet: a margin gate then passes
    and says so. A gate on a metric the evaluator did not produce fails, naming the metrics
    it did produce, as does a value that is not a finite number.
    """
    return Verdict(tuple(_one(gate, candidate, champion) for gate in gates))


def _one(
    gate: objectives.Gate,
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> Check:
    rule = "min" if gate.min is not None else "beat_champion_by"
    value = candidate.get(gate.metric)
    if value is None or not math.isfinite(value):
        return _fail(
            gate.metric,
            rule,
            _unusable(gate.metric, candidate),
            value=0.0 if value is None else value,
        )
    if gate.min is not None:
        passed = value >= gate.min - TOLERANCE
        return _checked(
            gate.metric, rule, gate.min, value, passed, f"{gate.metric} {value:.4g} ≥ {gate.min:g}"
        )
    margin = float(gate.beat_champion_by or 0.0)
    if champion is None:
        return Check(
            _result(gate.metric, rule, 0.0, value, True),
            f"{gate.metric} margin over the champion: no champion yet, passes",
        )
    reference = champion.get(gate.metric)
    if reference is None or not math.isfinite(reference):
        return _fail(
            gate.metric,
            rule,
            f"{gate.metric}: the champion has no comparable value for this metric",
            value=value,
        )
    if lower_is_better(gate.metric):
        threshold = reference - margin
        passed = value <= threshold + TOLERANCE
        relation = "≤"
    else:
        threshold = reference + margin
        passed = value >= threshold - TOLERANCE
        relation = "≥"
    return _checked(
        gate.metric,
        rule,
        threshold,
        value,
        passed,
        f"{gate.metric} {value:.4g} {relation} champion {reference:.4g} by {margin:g}",
    )


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is the better one (a loss, or a loss's lift)."""
    return metric.removeprefix(LIFT) in LOWER_IS_BETTER


def _unusable(metric: str, candidate: Mapping[str, float]) -> str:
    """Why a gate's metric cannot be compared, with the names it may have meant."""
    value = candidate.get(metric)
    if value is not None:
        return f"{metric}: the evaluator produced a non-finite {value} for this metric"
    produced = ", ".join(sorted(candidate)) or "none"
    close = difflib.get_close_matches(metric, candidate, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"{metric}: the evaluator did not produce this metric ({hint}it produced: {produced})"


def _checked(
    metric: str, rule: str, threshold: float, value: float, passed: bool, claim: str
) -> Check:
    """A compared gate; ``claim`` is what must hold, and the note says if it did not."""
    note = claim if passed else f"{claim} does not hold"
    return Check(_result(metric, rule, threshold, value, passed), note)


def _fail(metric: str, rule: str, note: str, *, value: float = 0.0) -> Check:
    """A gate that could not be compared: 0 stands in for the missing numbers."""
    return Check(_result(metric, rule, 0.0, value, False), note)


def _result(
    metric: str, rule: str, threshold: float, value: float, passed: bool
) -> evaluations_pb2.GateResult:
    return evaluations_pb2.GateResult(
        metric=metric, rule=rule, threshold=threshold, value=value, passed=passed
    )
