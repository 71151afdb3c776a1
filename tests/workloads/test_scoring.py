"""The evaluator's metrics against values worked out by hand, and its model readers."""

from __future__ import annotations

import math

import pytest

from tunewire.workloads import scoring

LABELS = ["refund", "shipping", "account", "warranty"]


def test_accuracy_counts_exact_label_matches() -> None:
    assert scoring.accuracy(["a", "a", "b", "c"], ["a", "b", "b", "a"]) == 0.5


def test_macro_f1_leaves_out_labels_neither_expected_nor_predicted() -> None:
    # refund: tp 1 of 2 predicted, 2 expected -> P 1/2, R 1/2, F1 1/2
    # shipping: tp 1 of 2 predicted, 1 expected -> P 1/2, R 1, F1 2/3
    # account: never predicted, expected once -> F1 0
    # warranty: never predicted nor expected -> left out; mean of three = 7/18
    expected = ["refund", "refund", "shipping", "account"]
    predicted = ["refund", "shipping", "shipping", "refund"]
    assert scoring.macro_f1(expected, predicted, labels=LABELS) == pytest.approx(7 / 18)


def test_macro_f1_is_one_for_perfect_predictions_on_a_partial_split() -> None:
    expected = ["refund", "shipping", "refund"]
    assert scoring.macro_f1(expected, list(expected), labels=LABELS) == 1.0


def test_macro_f1_charges_a_prediction_outside_the_labels_to_the_expected_label() -> None:
    # refund: tp 1, predicted 1, expected 2 -> P 1, R 1/2, F1 2/3; shipping: F1 1.
    expected = ["refund", "refund", "shipping"]
    predicted = ["refund", "banana", "shipping"]
    assert scoring.macro_f1(expected, predicted, labels=LABELS) == pytest.approx((2 / 3 + 1) / 2)


def test_exact_match_ignores_case_and_whitespace_only() -> None:
    expected = ["Refund", "late delivery", "a"]
    predicted = ["  refund\n", "Late   delivery", "b"]
    assert scoring.exact_match(expected, predicted) == pytest.approx(2 / 3)
    assert scoring.exact_match(["late delivery."], ["late delivery"]) == 0.0


def test_rouge_l_is_the_f_measure_of_the_longest_common_word_subsequence() -> None:
    # LCS "the cat on mat" = 4 words; P 4/5, R 4/6 -> F 8/11.
    assert scoring.rouge_l("The cat sat on the mat.", "the cat on a mat") == pytest.approx(8 / 11)
    assert scoring.rouge_l("refund please", "refund please") == 1.0
    assert scoring.rouge_l("refund", "") == 0.0
    assert scoring.rouge_l("", "") == 1.0
    assert scoring.mean_rouge_l(["a b", "c"], ["a b", "d"]) == 0.5


def test_perplexity_is_exp_of_the_mean_token_loss() -> None:
    assert scoring.perplexity(math.log(4.0)) == pytest.approx(4.0)
    assert scoring.perplexity(0.0) == 1.0
    assert scoring.perplexity(1e6) == math.inf


@pytest.mark.parametrize(
    ("expected", "predicted"), [([], []), (["a"], ["a", "b"])], ids=["empty", "uneven"]
)
def test_metrics_refuse_empty_or_unpaired_inputs(expected: list[str], predicted: list[str]) -> None:
    with pytest.raises(ValueError):
        scoring.accuracy(expected, predicted)
    with pytest.raises(ValueError):
        scoring.exact_match(expected, predicted)
