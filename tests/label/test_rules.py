"""The label service's rules: each kind votes or abstains, names are stable, and decide()
turns votes into a label or a reason for a human."""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import pytest

from tunewire import samples
from tunewire.core.state import objectives
from tunewire.label import rules


def ruleset(*rule_list: dict[str, Any], labels: tuple[str, ...] = ("a", "b")) -> rules.RuleSet:
    document = copy.deepcopy(samples.support_intent_spec())
    document["labels"] = list(labels)
    document["labelling"] = {"rules": list(rule_list)}
    return rules.RuleSet.compile(objectives.parse_spec(document))


def voted(rs: rules.RuleSet, text: str, fields: dict[str, Any] | None = None) -> list[str]:
    return [vote.rule for vote in rs.votes(text, fields or {})]


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("I want a refund", True),
        ("REFUND!", True),
        ("(refund)", True),
        ("refunded already", False),
        ("nonrefundable", False),
        ("please LOG\n  In now", True),
        ("blog in", False),
        ("", False),
    ],
)
def test_any_matches_whole_words_and_phrases_case_insensitively(text: str, matches: bool) -> None:
    rs = ruleset({"label": "a", "any": ["refund", "log in"]})
    assert voted(rs, text) == (["a/any#0"] if matches else [])


def test_any_folds_unicode_case_and_respects_unicode_word_boundaries() -> None:
    rs = ruleset({"label": "a", "any": ["straße", "café"]})
    assert voted(rs, "STRASSE 5") == ["a/any#0"]
    assert voted(rs, "Un CAFÉ, s'il vous plaît") == ["a/any#0"]
    assert voted(rs, "cafés") == []
    assert voted(rs, "Hauptstraße") == []


def test_any_with_punctuation_keywords_and_blank_keywords() -> None:
    assert voted(ruleset({"label": "a", "any": ["c++"]}), "I write C++ daily") == ["a/any#0"]
    assert voted(ruleset({"label": "a", "any": ["", "  "]}), "anything at all") == []
    assert voted(ruleset({"label": "a", "any": []}), "anything at all") == []


def test_any_matches_where_a_whole_word_regex_does() -> None:
    # The reference: the phrases between (?<!\w) and (?!\w), searched in the folded text.
    keywords = ["refund", "log in", "c++", "café", "re"]
    reference = re.compile(r"(?<!\w)(?:c\+\+|log\s+in|refund|café|re)(?!\w)")
    rs = ruleset({"label": "a", "any": keywords})
    rng = random.Random(4)
    pieces = ["refund", "refunds", "xrefund", "_refund", "log", "in", "c++", "cc++", "café", "re"]
    pieces += ["ré", "free", " ", "  ", "\n", "-", ".", "9", "é", "_"]
    texts = ["".join(rng.choices(pieces, k=rng.randrange(1, 8))) for _ in range(3_000)]
    for text in texts:
        expected = reference.search(text.casefold()) is not None
        assert voted(rs, text) == (["a/any#0"] if expected else []), text
    assert 0.1 < sum(bool(voted(rs, t)) for t in texts) / len(texts) < 0.9


def test_regex_is_searched_case_insensitively() -> None:
    rs = ruleset({"label": "b", "regex": r"\bdeliver(y|ed)?\b"})
    assert voted(rs, "Delivery is LATE") == ["b/regex#0"]
    assert voted(rs, "it was DELIVERED") == ["b/regex#0"]
    assert voted(rs, "deliverance") == []
    assert voted(ruleset({"label": "b", "regex": "ü+"}), "MÜNCHEN") == ["b/regex#0"]


def test_field_equals_compares_as_string_case_sensitively() -> None:
    rs = ruleset({"label": "a", "field": "channel", "equals": "chat"})
    assert voted(rs, "x", {"channel": "chat"}) == ["a/field#0"]
    assert voted(rs, "x", {"channel": "Chat"}) == []
    assert voted(rs, "x", {"channel": None}) == []
    assert voted(rs, "x", {}) == []
    assert voted(ruleset({"label": "a", "field": "n", "equals": "3"}), "x", {"n": 3}) == [
        "a/field#0"
    ]
    flag = ruleset({"label": "a", "field": "vip", "equals": "true"})
    assert voted(flag, "x", {"vip": True}) == ["a/field#0"]
    assert voted(flag, "x", {"vip": False}) == []


def test_only_a_field_rule_reads_the_fields() -> None:
    assert not ruleset({"label": "a", "any": ["x"]}, {"label": "b", "regex": "y"}).reads_fields
    assert ruleset(
        {"label": "a", "any": ["x"]}, {"label": "b", "field": "f", "equals": "1"}
    ).reads_fields


def test_field_reaches_into_nested_objects_with_a_dotted_name() -> None:
    rs = ruleset({"label": "a", "field": "customer.tier", "equals": "gold"})
    assert voted(rs, "x", {"customer": {"tier": "gold"}}) == ["a/field#0"]
    assert voted(rs, "x", {"customer.tier": "gold"}) == ["a/field#0"]
    assert voted(rs, "x", {"customer": "gold"}) == []


def test_length_bounds_are_inclusive_characters() -> None:
    rs = ruleset({"label": "a", "min_length": 3, "max_length": 5})
    assert voted(rs, "ab") == []
    assert voted(rs, "abc") == ["a/length#0"]
    assert voted(rs, "ééééé") == ["a/length#0"]
    assert voted(rs, "abcdef") == []
    assert voted(ruleset({"label": "a", "max_length": 2}), "") == ["a/length#0"]
    assert voted(ruleset({"label": "a", "min_length": 2}), "x" * 10_000) == ["a/length#0"]


def test_rule_names_follow_the_objectives_rule_order() -> None:
    spec = objectives.parse_spec(samples.support_intent_spec())
    rs = rules.RuleSet.compile(spec)
    assert rs.names == ("refund/any#0", "shipping/regex#1", "account/any#2", "warranty/any#3")
    votes = rs.votes("Refund request\nThe parcel is late.", {})
    assert votes == [
        rules.Vote("refund/any#0", "refund"),
        rules.Vote("shipping/regex#1", "shipping"),
    ]


def test_sample_rules_are_right_when_they_agree_and_leave_some_to_humans() -> None:
    spec = objectives.parse_spec(samples.support_intent_spec())
    rs = rules.RuleSet.compile(spec)
    decisions = []
    for ticket, intent in samples.labelled_tickets(500):
        data = ticket["data"]
        decision = rules.decide(rs.votes(data["subject"] + "\n" + data["body"], data), 1)
        decisions.append(decision.reason)
        if decision.label is not None:
            assert decision.label == intent, data
    agreed = decisions.count("agreed") / len(decisions)
    assert 0.8 < agreed < 0.97, "most are covered, and some need a human"
    assert "conflict" in decisions and "abstain" in decisions


VA1, VA2, VB = rules.Vote("a/any#0", "a"), rules.Vote("a/regex#1", "a"), rules.Vote("b/any#2", "b")


@pytest.mark.parametrize(
    ("votes", "min_agreement", "label", "reason"),
    [
        ([], 1, None, "abstain"),
        ([VA1], 1, "a", "agreed"),
        ([VA1, VA2], 2, "a", "agreed"),
        ([VA1], 2, None, "too_few_votes"),
        ([VA1, VA1], 2, None, "too_few_votes"),
        ([VA1, VB], 1, None, "conflict"),
        ([VA1, VA2, VB], 1, None, "conflict"),
        ([VA1, VA2, VB], 5, None, "conflict"),
    ],
)
def test_decide(
    votes: list[rules.Vote], min_agreement: int, label: str | None, reason: str
) -> None:
    decision = rules.decide(votes, min_agreement)
    assert (decision.label, decision.reason) == (label, reason)
    assert decision.votes == tuple(votes)


def test_a_catastrophic_pattern_matches_in_linear_time() -> None:
    """A backtracking engine takes longer than the age of the universe on this text; the
    rule's engine answers at once (the test would time out otherwise)."""
    rs = ruleset({"label": "a", "regex": "(a+)+$"}, {"label": "b", "regex": r"(x|x)*y"})
    assert voted(rs, "a" * 100_000 + "b") == []
    assert voted(rs, "x" * 100_000) == []
    assert voted(rs, "aaa") == ["a/regex#0"]


class _Fields(dict[str, Any]):
    """A record's fields that note every field a rule looks up."""

    def __init__(self, **fields: Any) -> None:
        super().__init__(fields)
        self.looked_up: list[str] = []

    def __contains__(self, name: object) -> bool:
        self.looked_up.append(str(name))
        return super().__contains__(name)


def test_rules_stop_at_the_first_rule_that_overruns_the_time_budget() -> None:
    rs = ruleset(
        {"label": "a", "any": ["refund"]},
        {"label": "b", "field": "channel", "equals": "email"},
        {"label": "a", "field": "tier", "equals": "gold"},
    )
    fields = _Fields(channel="email", tier="gold")
    with pytest.raises(rules.OverBudget) as over:
        rs.votes("a refund please " * 1000, fields, budget_s=1e-9)
    assert over.value.rule == "a/any#0"
    assert over.value.budget_s == 1e-9 and over.value.elapsed_s > 1e-9
    assert fields.looked_up == [], "the rules after the one over budget never ran"

    within = rs.votes("a refund please", fields, budget_s=10.0)
    assert [v.rule for v in within] == ["a/any#0", "b/field#1", "a/field#2"]
    assert fields.looked_up == ["channel", "tier"]
