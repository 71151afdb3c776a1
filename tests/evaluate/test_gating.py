"""Gates: absolute minimums and margins over the champion, in spec order, with reasons."""

from __future__ import annotations

import math

import pytest

from tunewire.core.state import objectives
from tunewire.evaluate import gating


def _gate(metric: str, **rule: float) -> objectives.Gate:
    return objectives.Gate.model_validate({"metric": metric, **rule})


def _summary(verdict: gating.Verdict) -> list[tuple[str, str, float, float, bool]]:
    return [
        (r.metric, r.rule, round(r.threshold, 6), round(r.value, 6), r.passed)
        for r in verdict.results
    ]


def test_every_gate_is_reported_in_spec_order() -> None:
    gates = [
        _gate("accuracy", min=0.8),
        _gate("macro_f1", beat_champion_by=0.02),
        _gate("accuracy", beat_champion_by=0.01),
    ]
    verdict = gating.check(
        gates,
        candidate={"accuracy": 0.85, "macro_f1": 0.70},
        champion={"accuracy": 0.83, "macro_f1": 0.69},
    )
    assert _summary(verdict) == [
        ("accuracy", "min", 0.8, 0.85, True),
        ("macro_f1", "beat_champion_by", 0.71, 0.70, False),
        ("accuracy", "beat_champion_by", 0.84, 0.85, True),
    ]
    assert not verdict.passed
    assert [c.result.metric for c in verdict.failed] == ["macro_f1"]
    assert verdict.reason() == ("failed gates: macro_f1 0.7 ≥ champion 0.69 by 0.02 does not hold")


def test_a_minimum_is_inclusive_and_a_miss_says_by_how_much() -> None:
    gates = [_gate("accuracy", min=0.8)]
    assert gating.check(gates, candidate={"accuracy": 0.8}, champion=None).passed
    missed = gating.check(gates, candidate={"accuracy": 0.79}, champion=None)
    assert not missed.passed
    assert missed.reason() == "failed gates: accuracy 0.79 ≥ 0.8 does not hold"


def test_a_margin_that_is_met_exactly_passes_despite_float_rounding() -> None:
    verdict = gating.check(
        [_gate("accuracy", beat_champion_by=0.01)],
        candidate={"accuracy": 0.81},
        champion={"accuracy": 0.80},
    )
    assert verdict.passed, _summary(verdict)
    assert verdict.reason() == "passed every gate"


def test_beating_the_champion_on_a_loss_means_being_lower() -> None:
    gates = [_gate("eval_loss", beat_champion_by=0.1), _gate("perplexity", beat_champion_by=1)]
    better = gating.check(
        gates,
        candidate={"eval_loss": 1.0, "perplexity": 2.7},
        champion={"eval_loss": 1.2, "perplexity": 3.9},
    )
    assert _summary(better) == [
        ("eval_loss", "beat_champion_by", 1.1, 1.0, True),
        ("perplexity", "beat_champion_by", 2.9, 2.7, True),
    ]
    worse = gating.check(
        gates,
        candidate={"eval_loss": 1.15, "perplexity": 2.0},
        champion={"eval_loss": 1.2, "perplexity": 3.9},
    )
    assert [r.passed for r in worse.results] == [False, True]
    assert "eval_loss 1.15 ≤ champion 1.2 by 0.1 does not hold" in worse.reason()


def test_a_margin_without_a_champion_passes_and_says_so() -> None:
    verdict = gating.check(
        [_gate("accuracy", min=0.5), _gate("accuracy", beat_champion_by=0.01)],
        candidate={"accuracy": 0.6},
        champion=None,
    )
    assert verdict.passed
    assert verdict.checks[1].result.passed
    assert verdict.checks[1].note == "accuracy margin over the champion: no champion yet, passes"
    assert verdict.reason() == (
        "passed every gate (accuracy margin over the champion: no champion yet, passes)"
    )


def test_a_metric_the_evaluator_did_not_produce_fails_the_gate() -> None:
    verdict = gating.check(
        [_gate("accuracy", min=0.5), _gate("rouge_l", min=0.3)],
        candidate={"accuracy": 0.9, "macro_f1": 0.8},
        champion=None,
    )
    assert [r.passed for r in verdict.results] == [True, False]
    assert verdict.reason() == (
        "failed gates: rouge_l: the evaluator did not produce this metric "
        "(it produced: accuracy, macro_f1)"
    )


def test_a_champion_without_the_metric_fails_a_margin_gate() -> None:
    verdict = gating.check(
        [_gate("macro_f1", beat_champion_by=0.0)],
        candidate={"macro_f1": 0.9},
        champion={"accuracy": 0.5},
    )
    assert not verdict.passed
    assert "the champion has no comparable value" in verdict.reason()


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_non_finite_value_fails(value: float) -> None:
    verdict = gating.check(
        [_gate("perplexity", min=0.0)], candidate={"perplexity": value}, champion=None
    )
    assert not verdict.passed
    assert "non-finite" in verdict.reason()


def test_no_gates_pass() -> None:
    verdict = gating.check([], candidate={"accuracy": 0.1}, champion=None)
    assert verdict.passed
    assert verdict.results == []
    assert verdict.reason() == "the objective has no gates"


def test_any_metric_the_evaluator_reports_can_be_gated_by_its_name() -> None:
    gates = [
        _gate("field_f1", min=0.5),
        _gate("schema_valid_rate", min=0.9),
        _gate("field_accuracy.severity", min=0.7),
        _gate("lift.field_f1", min=0.1),
        _gate("token_f1", beat_champion_by=0.02),
    ]
    verdict = gating.check(
        gates,
        candidate={
            "field_f1": 0.6,
            "schema_valid_rate": 1.0,
            "field_accuracy.severity": 0.65,
            "lift.field_f1": 0.25,
            "token_f1": 0.5,
        },
        champion={"token_f1": 0.45},
    )
    assert _summary(verdict) == [
        ("field_f1", "min", 0.5, 0.6, True),
        ("schema_valid_rate", "min", 0.9, 1.0, True),
        ("field_accuracy.severity", "min", 0.7, 0.65, False),
        ("lift.field_f1", "min", 0.1, 0.25, True),
        ("token_f1", "beat_champion_by", 0.47, 0.5, True),
    ]
    assert verdict.reason() == ("failed gates: field_accuracy.severity 0.65 ≥ 0.7 does not hold")


def test_beating_the_champion_on_the_lift_of_a_loss_means_being_lower() -> None:
    verdict = gating.check(
        [_gate("lift.eval_loss", beat_champion_by=0.1)],
        candidate={"lift.eval_loss": -0.5},
        champion={"lift.eval_loss": -0.3},
    )
    assert _summary(verdict) == [("lift.eval_loss", "beat_champion_by", -0.4, -0.5, True)]
    assert gating.lower_is_better("lift.perplexity")
    assert not gating.lower_is_better("lift.accuracy")


def test_a_misspelt_metric_fails_its_gate_naming_the_closest_one() -> None:
    verdict = gating.check(
        [_gate("field_f1_mirco", min=0.5)],
        candidate={"field_f1_micro": 0.9, "schema_valid_rate": 1.0},
        champion=None,
    )
    assert not verdict.passed
    assert verdict.reason() == (
        "failed gates: field_f1_mirco: the evaluator did not produce this metric "
        "(did you mean field_f1_micro? it produced: field_f1_micro, schema_valid_rate)"
    )
