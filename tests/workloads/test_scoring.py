"""The evaluator's metrics against values worked out by hand, and its model readers."""

from __future__ import annotations

import math
import pathlib
from typing import Any

import pytest
import torch

from tests.workloads import evaluate_support
from tunewire.core.state import objectives
from tunewire.workloads import data, models, scoring

LABELS = ["refund", "shipping", "account", "warranty"]
MAX_SEQ_LEN = 128
TICKET = objectives.Output.model_validate(
    {
        "fields": {
            "intent": {"enum": ["refund", "shipping"]},
            "urgent": {"type": "boolean"},
            "order": {"required": False},
        }
    }
)
"""An extraction's output with an enum, a boolean and an optional string."""
CHOICES = objectives.Output.model_validate(
    {
        "fields": {
            "intent": {"enum": ["refund", "shipping", "account"]},
            "urgent": {"type": "boolean"},
            "repeat": {"type": "boolean", "required": False},
        }
    }
)
"""An output of enums and booleans only: every valid answer is a few tokens long."""


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


def test_token_f1_is_the_f_measure_of_the_shared_bag_of_words() -> None:
    # Shared words: "the" twice, "cat" once = 3; P 3/4, R 3/6 -> F 3/5.
    assert scoring.token_f1("The cat sat on the mat.", "the cat, the dog") == pytest.approx(0.6)
    # Word order does not matter, unlike ROUGE-L's subsequence.
    assert scoring.token_f1("late parcel", "parcel late") == 1.0
    assert scoring.rouge_l("late parcel", "parcel late") == 0.5
    assert scoring.token_f1("refund", "") == 0.0
    assert scoring.token_f1("", "") == 1.0
    assert scoring.mean_token_f1(["a b", "c"], ["b a", "d"]) == 0.5


def test_length_ratio_is_the_mean_answer_length_over_the_reference_length() -> None:
    # 2/4 and 0/1, averaged; a reference without words counts as one word.
    assert scoring.length_ratio(["one two three four", "a"], ["one two", ""]) == 0.25
    assert scoring.length_ratio(["..."], ["x y"]) == 2.0


def test_extraction_metrics_count_invalid_json_wrong_types_and_wrong_fields() -> None:
    expected = [
        '{"intent":"refund","urgent":true,"order":"A1"}',
        '{"intent":"shipping","urgent":false}',
        '{"intent":"refund","urgent":false}',
        '{"intent":"shipping","urgent":true,"order":"B2"}',
    ]
    predicted = [
        '{"intent":"refund","urgent":true,"order":"A1"}',  # all right
        '{"intent":"shipping","urgent":0}',  # JSON, but 0 is no boolean: schema-invalid
        "not json",  # every field wrong
        '{"intent":"shipping","urgent":true,"order":"C3"}',  # valid, the order wrong
    ]
    # Per field (TP, FP, FN): intent (3, 0, 1) -> F1 6/7; urgent (2, 1, 2) -> 4/7;
    # order (1, 1, 1) -> 1/2 (the second and third expect no order and predict none).
    # Micro: (6, 2, 4) -> 12/18; macro: (6/7 + 4/7 + 1/2) / 3 = 9/14.
    assert scoring.extraction_metrics(TICKET, expected, predicted) == pytest.approx(
        {
            "json_valid_rate": 3 / 4,
            "schema_valid_rate": 2 / 4,
            "field_accuracy.intent": 3 / 4,
            "field_accuracy.urgent": 2 / 4,
            "field_accuracy.order": 2 / 4,
            "field_accuracy": 7 / 12,
            "field_f1_micro": 2 / 3,
            "field_f1_macro": 9 / 14,
            "field_f1": 2 / 3,
            "exact_record_match": 1 / 4,
        }
    )


def test_macro_field_f1_weighs_a_rare_field_as_much_as_a_common_one() -> None:
    output = objectives.Output.model_validate(
        {"fields": {"common": {}, "rare": {"required": False}, "never": {"required": False}}}
    )
    expected = ['{"common":"x","rare":"y"}'] + ['{"common":"x"}'] * 8
    predicted = ['{"common":"x"}'] * 9
    values = scoring.extraction_metrics(output, expected, predicted)
    # common (9, 0, 0) and rare (0, 0, 1): micro 18/19; macro (1 + 0) / 2, leaving out
    # "never", neither expected nor predicted.
    assert values["field_f1_micro"] == pytest.approx(18 / 19)
    assert values["field_f1_macro"] == 0.5
    assert values["field_accuracy.never"] == 1.0
    assert values["exact_record_match"] == pytest.approx(8 / 9)


def test_extraction_values_compare_as_json_values() -> None:
    output = objectives.Output.model_validate(
        {"fields": {"flag": {"type": "boolean"}, "count": {"type": "number"}}}
    )
    values = scoring.extraction_metrics(
        output, ['{"flag":true,"count":1}'] * 2, ['{"flag":1,"count":1.0}', '["flag"]']
    )
    assert values["field_accuracy.flag"] == 0.0, "1 is not true"
    assert values["field_accuracy.count"] == 0.5, "1.0 is 1; a JSON list is no answer"
    assert values["json_valid_rate"] == 0.5
    with pytest.raises(ValueError, match="is not a JSON object"):
        scoring.extraction_metrics(output, ["[]"], ["{}"])


def test_lift_is_the_gain_over_the_base_on_the_metrics_both_have() -> None:
    lifted = scoring.lift(
        {"accuracy": 0.8, "eval_loss": 1.0, "perplexity": math.inf, "extra": 1.0},
        {"accuracy": 0.5, "eval_loss": 1.5, "perplexity": 4.5},
    )
    assert lifted == pytest.approx({"lift.accuracy": 0.3, "lift.eval_loss": -0.5})


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
    assert scored.values["token_f1"] == scoring.mean_token_f1(truth, scored.answers)
    assert scored.values["length_ratio"] == scoring.length_ratio(truth, scored.answers)


def test_extraction_answers_held_to_the_schema_are_valid_canonical_json(
    base: models.Loaded, examples: list[dict[str, Any]]
) -> None:
    reference = {"role": "assistant", "content": '{"intent":"refund","urgent":true}'}
    lines = [{**e, "messages": [*e["messages"][:-1], reference]} for e in examples]
    grammar = scoring.Grammar.of_schema(base.tokenizer, CHOICES.json_schema())

    scored = scoring.score_extraction(
        base.model,
        base.tokenizer,
        lines,
        output=CHOICES,
        max_seq_len=MAX_SEQ_LEN,
        max_new_tokens=32,
        batch_size=3,
    )

    for answer in scored.answers:
        values = scoring.parse_object(answer)
        assert values is not None and CHOICES.problems(values) == [], answer
        assert answer == CHOICES.canonical(values), "compact, in the schema's field order"
    one_by_one = [
        scoring.generate(
            base.model,
            base.tokenizer,
            [line],
            max_new_tokens=32,
            max_seq_len=MAX_SEQ_LEN,
            grammar=grammar,
        )[0]
        for line in lines
    ]
    assert scored.answers == one_by_one, "each row keeps its own place in the grammar"
    truth = [scoring.answer(line) for line in lines]
    assert scored.values == pytest.approx(
        {
            **scoring.extraction_metrics(CHOICES, truth, scored.answers),
            "eval_loss": scored.values["eval_loss"],
            "perplexity": math.exp(scored.values["eval_loss"]),
        }
    )
    assert scored.values["schema_valid_rate"] == 1.0


def test_an_extraction_answer_cut_short_by_the_token_limit_is_not_json(
    base: models.Loaded, examples: list[dict[str, Any]]
) -> None:
    grammar = scoring.Grammar.of_schema(base.tokenizer, CHOICES.json_schema())
    [cut] = scoring.generate(
        base.model,
        base.tokenizer,
        examples[:1],
        max_new_tokens=3,
        max_seq_len=MAX_SEQ_LEN,
        grammar=grammar,
    )
    assert cut.startswith("{") and scoring.parse_object(cut) is None
