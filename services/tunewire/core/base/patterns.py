"""Regular expressions that people write into objectives, matched in linear time.

A labelling rule's ``regex`` runs on every record of its objective. With a backtracking
engine one careless (or hostile) pattern such as ``(a+)+$`` pins the label consumer on a
long ``aaaa…b`` and stops labelling for every objective; RE2 (through the maintained
``google-re2`` binding) matches in time linear in the text, whatever the pattern. The price:
no lookaround and no backreferences, which are refused when the objective is registered,
and ``\\w``, ``\\d`` and ``\\b`` are ASCII classes.
"""

from __future__ import annotations

from typing import Any

import re2

MAX_PATTERN_CHARS = 1000
"""Longest pattern a rule may hold."""


def compile_rule(pattern: str) -> Any:
    """The compiled, case-insensitive pattern; :class:`ValueError` saying why not."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"regex is {len(pattern)} characters; the limit is {MAX_PATTERN_CHARS}")
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"regex does not compile: {why}; rules match with RE2 in linear time, which has "
            "no lookaround and no backreferences"
        ) from None
