"""The evaluator's metrics against values worked out by hand, and its model readers."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import pytest
import torch

from tests.workloads import evaluate_support
from tunewire.workloads import data, models, scoring

LABELS = ["refund", "shipping", "account", "warranty"]
MAX_SEQ_LEN = 128


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


# -- readers, on the built-in model ------------------------------------------------------


@pytest.fixture(scope="module")
def base(model_cache: pathlib.Path) -> models.Loaded:
    """The built-in model (in eval mode, as loaded), shared by this module's tests."""
    return evaluate_support.load_base(model_cache)


@pytest.fixture(scope="module")
def examples() -> list[dict[str, Any]]:
    return evaluate_support.chat_examples(5, seed=11)


def _answer_nll(base: models.Loaded, messages: list[dict[str, Any]]) -> tuple[float, int]:
    """Summed loss of the answer tokens and their count, one unpadded sequence at a time."""
    encoded = data.encode(base.tokenizer, messages, max_seq_len=MAX_SEQ_LEN)
    tokens = sum(label != data.IGNORE_INDEX for label in encoded.labels)
    with torch.inference_mode():
        loss = base.model(
            input_ids=torch.tensor([encoded.input_ids]), labels=torch.tensor([encoded.labels])
        ).loss
    # transformers' loss is the mean over the answer tokens (the prompt is never empty).
    return float(loss) * tokens, tokens


def test_label_logprobs_equal_the_models_own_loss_on_each_label(
    base: models.Loaded, examples: list[dict[str, Any]]
) -> None:
    scores = scoring.label_logprobs(
        base.model,
        base.tokenizer,
        examples,
        labels=LABELS,
        max_seq_len=MAX_SEQ_LEN,
        batch_size=2,
    )
    expected = [
        [
            -_answer_nll(base, [*e["messages"][:-1], {"role": "assistant", "content": label}])[0]
            for label in LABELS
        ]
        for e in examples
    ]
    assert scores.shape == (len(examples), len(LABELS))
    torch.testing.assert_close(scores, torch.tensor(expected), rtol=1e-4, atol=1e-4)


def test_classification_picks_the_likeliest_label_and_reports_progress(
    base: models.Loaded, examples: list[dict[str, Any]]
) -> None:
    seen: list[int] = []
    scored = scoring.score_classification(
        base.model,
        base.tokenizer,
        examples,
        labels=LABELS,
        max_seq_len=MAX_SEQ_LEN,
        batch_size=2,
        on_progress=seen.append,
    )
    scores = scoring.label_logprobs(
        base.model, base.tokenizer, examples, labels=LABELS, max_seq_len=MAX_SEQ_LEN
    )
    chosen = [LABELS[int(i)] for i in scores.argmax(dim=1)]
    truth = [scoring.answer(e) for e in examples]
    assert scored.answers == chosen
    assert scored.values == {
        "accuracy": scoring.accuracy(truth, chosen),
        "macro_f1": scoring.macro_f1(truth, chosen, labels=LABELS),
    }
    assert seen == [2, 4, 5]


def test_generation_scores_greedy_answers_and_the_loss_of_the_references(
    base: models.Loaded, examples: list[dict[str, Any]]
) -> None:
    scored = scoring.score_generation(
        base.model,
        base.tokenizer,
        examples,
        max_seq_len=MAX_SEQ_LEN,
        max_new_tokens=6,
        batch_size=3,
    )
    one_by_one = [
        scoring.generate(
            base.model, base.tokenizer, [e], max_new_tokens=6, max_seq_len=MAX_SEQ_LEN
        )[0]
        for e in examples
    ]
    losses = [_answer_nll(base, e["messages"]) for e in examples]
    mean_loss = sum(loss for loss, _ in losses) / sum(count for _, count in losses)
    truth = [scoring.answer(e) for e in examples]
    assert scored.answers == one_by_one, "left padding must not change what is generated"
    assert all(answer for answer in scored.answers)
    assert scored.values["eval_loss"] == pytest.approx(mean_loss, rel=1e-4)
    assert scored.values["perplexity"] == pytest.approx(math.exp(mean_loss), rel=1e-4)
    assert scored.values["exact_match"] == scoring.exact_match(truth, scored.answers)
    assert scored.values["rouge_l"] == scoring.mean_rouge_l(truth, scored.answers)
