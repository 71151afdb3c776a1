"""Weak supervision: an objective's labelling rules, compiled once, voting on each record.

Each rule of ``spec.labelling.rules`` votes for its label when it matches a record and abstains
otherwise; :func:`decide` turns the votes into a label, or into a reason the record goes to the
human queue (or is dropped). The module is pure — no I/O — so the consumer can call it per record
and the tests can pin every case. Patterns are compiled in :meth:`RuleSet.compile`, never per
record, because :meth:`RuleSet.votes` sits on the ingest-rate hot path. Its only look outside is
at the clock: a record's rules stop with :class:`OverBudget` once they have taken longer than
the time budget they were given.

How each rule kind matches:

- ``any``: keywords and phrases match as whole words, case-insensitively (full Unicode case
  folding, so ``STRASSE`` matches ``straße``): ``refund`` matches ``Refund!`` but not ``refunded``
  or ``nonrefund``, and the words of a phrase may be separated by any run of whitespace
  (``log in`` matches ``log\\nin``). Blank keywords are ignored; a rule with none never votes.
- ``regex``: searched anywhere in the text, case-insensitively, with RE2 (linear time in the
  text whatever the pattern; :mod:`tunewire.core.base.patterns`); the author adds ``\\b``
  where word boundaries matter.
- ``field`` + ``equals``: the record's data field, as a string, equals ``equals`` exactly
  (case-sensitive). Booleans compare as ``true``/``false`` (as written in JSON/YAML), a missing
  or null field abstains, and a dotted name (``customer.tier``) reaches into nested objects when
  no top-level field has that exact name.
- ``min_length``/``max_length``: the text's length in characters lies within the bounds, both
  inclusive; a missing bound is open.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from tunewire.core.base import patterns
from tunewire.core.state import objectives

Reason = Literal["agreed", "conflict", "abstain", "too_few_votes"]


@dataclasses.dataclass(frozen=True)
class Vote:
    """One rule's vote: the rule's stable name (``{label}/{kind}#{index}``) and its label."""

    rule: str
    label: str


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome for one record.

    ``label`` is set only when ``reason`` is ``agreed``; for the other reasons the votes (kept
    for lineage and for the human queue) say which labels were proposed.
    """

    label: str | None
    reason: Reason
    votes: tuple[Vote, ...]


class OverBudget(Exception):
    """A record's rules took longer than their time budget (raised by :meth:`RuleSet.votes`)."""

    def __init__(self, *, elapsed_s: float, budget_s: float, rule: str) -> None:
        super().__init__(f"{elapsed_s:.6f} s over a budget of {budget_s:g} s, at {rule}")
        self.elapsed_s = elapsed_s
        self.budget_s = budget_s
        self.rule = rule
        """The rule that ran last: the slow one, or the one that tipped the record over."""


_WORD = re.compile(r"\w")

# A compiled rule: the text (original and case-folded) and the record's fields in, match or not.
_Matcher = Callable[[str, str, Mapping[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class _Compiled:
    vote: Vote
    matches: _Matcher
    reads_fields: bool = False


class RuleSet:
    """An objective's rules, compiled once; cheap to call per record and safe to share."""

    def __init__(self, compiled: Sequence[_Compiled]) -> None:
        self._rules = tuple(compiled)

    @classmethod
    def compile(cls, spec: objectives.ObjectiveSpec) -> RuleSet:
        """Compile every rule of ``spec.labelling.rules`` (the spec has validated them)."""
        return cls([_compile(index, rule) for index, rule in enumerate(spec.labelling.rules)])

    @property
    def reads_fields(self) -> bool:
        """Whether any rule looks at the record's fields (parsing them is the caller's cost)."""
        return any(rule.reads_fields for rule in self._rules)

    @property
    def names(self) -> tuple[str, ...]:
        """Every rule's name, in the objective's order."""
        return tuple(rule.vote.rule for rule in self._rules)

    def votes(
        self, text: str, fields: Mapping[str, Any], *, budget_s: float = math.inf
    ) -> list[Vote]:
        """The votes of the rules that match, in the objective's rule order.

        The clock is read after each rule: once the record's rules (case folding included)
        have taken longer than ``budget_s``, the rest are skipped and :class:`OverBudget`
        is raised.
        """
        started = time.perf_counter()
        # Folded once per record, not once per keyword rule.
        folded = text.casefold()
        found = []
        for rule in self._rules:
            if rule.matches(text, folded, fields):
                found.append(rule.vote)
            elapsed_s = time.perf_counter() - started
            if elapsed_s > budget_s:
                raise OverBudget(elapsed_s=elapsed_s, budget_s=budget_s, rule=rule.vote.rule)
        return found


def decide(votes: Sequence[Vote], min_agreement: int) -> Decision:
    """Turn votes into a decision.

    No votes abstain. Votes for two or more labels are a conflict even when one label has more
    votes: rules that disagree are a question for a human, not a majority. A single label needs
    ``min_agreement`` votes from distinct rules (a repeated vote of the same rule counts once).
    """
    kept = tuple(votes)
    if not kept:
        return Decision(label=None, reason="abstain", votes=kept)
    labels = {vote.label for vote in kept}
    if len(labels) > 1:
        return Decision(label=None, reason="conflict", votes=kept)
    if len({vote.rule for vote in kept}) < min_agreement:
        return Decision(label=None, reason="too_few_votes", votes=kept)
    return Decision(label=labels.pop(), reason="agreed", votes=kept)


def _compile(index: int, rule: objectives.Rule) -> _Compiled:
    if rule.any is not None:
        return _Compiled(Vote(f"{rule.label}/any#{index}", rule.label), _keywords(rule.any))
    if rule.regex is not None:
        return _Compiled(Vote(f"{rule.label}/regex#{index}", rule.label), _regex(rule.regex))
    if rule.field is not None and rule.equals is not None:
        matcher = _field_equals(rule.field, rule.equals)
        vote = Vote(f"{rule.label}/field#{index}", rule.label)
        return _Compiled(vote, matcher, reads_fields=True)
    matcher = _length(rule.min_length, rule.max_length)
    return _Compiled(Vote(f"{rule.label}/length#{index}", rule.label), matcher)


def _keywords(keywords: Sequence[str]) -> _Matcher:
    # One alternation per rule; the lookarounds (rather than \b) also give whole-word matches
    # for keywords that start or end with punctuation, such as "c++".
    phrases = [
        r"\s+".join(re.escape(word) for word in keyword.casefold().split())
        for keyword in keywords
        if keyword.strip()
    ]
    if not phrases:
        return lambda text, folded, fields: False
    # Longest first, so the alternation tries the most specific phrase before its prefix.
    phrases.sort(key=len, reverse=True)
    # The start of a match is checked here rather than with a leading (?<!\w): a pattern that
    # begins with a lookbehind is tried at every position, one that begins with the phrases
    # lets the engine skip to where one could start (faster; figure in bench/README.md).
    search = re.compile(r"(?:" + "|".join(phrases) + r")(?!\w)").search

    def matches(text: str, folded: str, fields: Mapping[str, Any]) -> bool:
        start = 0
        while (found := search(folded, start)) is not None:
            at = found.start()
            if at == 0 or _WORD.match(folded, at - 1) is None:
                return True
            start = at + 1
        return False

    return matches


def _regex(pattern: str) -> _Matcher:
    search = patterns.compile_rule(pattern).search
    return lambda text, folded, fields: search(text) is not None


def _field_equals(name: str, expected: str) -> _Matcher:
    path = name.split(".")

    def matches(text: str, folded: str, fields: Mapping[str, Any]) -> bool:
        value = _lookup(fields, name, path)
        if value is None:
            return False
        if isinstance(value, bool):
            return ("true" if value else "false") == expected
        return str(value) == expected

    return matches


def _lookup(fields: Mapping[str, Any], name: str, path: Sequence[str]) -> Any:
    if name in fields:
        return fields[name]
    value: Any = fields
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _length(minimum: int | None, maximum: int | None) -> _Matcher:
    low = 0 if minimum is None else minimum
    high = float("inf") if maximum is None else maximum
    return lambda text, folded, fields: low <= len(text) <= high
