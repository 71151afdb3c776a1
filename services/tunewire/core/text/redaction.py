"""Find personal data in event text and replace it with typed placeholders.

Why: ingest stores and forwards business events that later become training data for a
model. Anything a customer typed into a ticket, a note or a chat line can hold an e-mail
address, a phone number, a payment card, a bank account or an IP address; once such a value
is in the object store or in a fine-tuned model it cannot be taken back. So every text value
is redacted here, on the hot path, before anything leaves the ingest service.

What: a `Redactor` replaces each detected value with ``<EMAIL>``, ``<PHONE>``, ``<CARD>``,
``<IBAN>`` or ``<IP>`` and counts the replacements per kind (for metrics and audit).
Detection is one combined regular expression with a named group per kind (compiled in
variants, so that the e-mail and IPv6 alternatives only run on text holding an ``@`` or two
``:``, and ASCII text gets cheaper ASCII-only patterns), followed by a cheap check of the
candidate where a checksum exists: card numbers must pass Luhn, IBANs the ISO 13616 mod-97
check, IPv6 candidates must parse with `ipaddress`. Card numbers are tried before phone
numbers, so a card is never half-redacted as a phone.

Speed, as this runs for every text of every event: text that cannot hold any kind (no digit,
``@`` or two ``:``; or, when short, too few digits) skips the regular expression; the scan
jumps in C from one non-word character to the next, since every kind starts after one. No
result is cached: that would keep raw PII in memory.

What it deliberately does not catch (false negatives traded for few false positives):

* names, postal addresses, dates of birth, national ID, passport or tax numbers — these need
  a language model or per-country rules, not a regex on the hot path;
* phone numbers without a ``+``/``00`` prefix, parentheses or a space/dash separator
  (``5551234567``), with dots as separators (``555.123.4567``), with fewer than 9 or more
  than 15 digits, or written with words (``five five five``);
* card numbers that fail Luhn, start with 0, or use another grouping than 4-4-4-4(-x),
  4-6-4/4-6-5 or no separators;
* IBANs in lower case, with separators other than single spaces, or failing mod-97;
* IP addresses glued to letters (``ip10.0.0.1``), IPv4 with leading zeros, IPv6 with a zone
  (``fe80::1%eth0``) or without any decimal digit (``dead::beef``), and the bare ``::``;
* e-mail addresses with quoted local parts or IP-literal domains.

Known false positives, accepted because redacting too much is the safer error: numbers of
9-15 digits written in consistent space or dash groups (``12 345 678 901``); a phone
number swallowing a short digit group that directly follows it (``030 1234 5678 12``); any
13-19 digit number that happens to pass Luhn (one in ten do) in a card layout, such as a
long order number; and a 19-digit grouped number failing Luhn whose first 16 digits pass,
which is read as a card followed by a CVV (``<CARD> 123``).
"""

from __future__ import annotations

import collections
import enum
import ipaddress
import re
import string
from collections.abc import Callable, Iterable
from typing import TypeAlias

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A parsed JSON document, as `json.loads` returns it."""


class PiiKind(enum.StrEnum):
    """A kind of personal data the redactor recognises; the value names its counter."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    IP = "ip"


ALL_KINDS: frozenset[PiiKind] = frozenset(PiiKind)
"""Every kind; the default for `Redactor`."""

_PLACEHOLDERS: dict[PiiKind, str] = {kind: f"<{kind.name}>" for kind in PiiKind}

# Plain-str names of the kinds, for the hot path: hashing an enum member runs Python code.
_EMAIL_KEY: str = PiiKind.EMAIL.value
_PHONE_KEY: str = PiiKind.PHONE.value
_CARD_KEY: str = PiiKind.CARD.value
_IBAN_KEY: str = PiiKind.IBAN.value
_IP_KEY: str = PiiKind.IP.value


def placeholder(kind: PiiKind) -> str:
    """Return the text that replaces a value of ``kind``, e.g. ``"<EMAIL>"``."""
    return _PLACEHOLDERS[kind]


# Each alternative carries its own boundaries: a lookbehind so that a candidate never starts
# inside a word or a longer number, and a lookahead so that it never stops inside one. The
# order matters where two alternatives can start at the same place: cards before phones.
_EMAIL = r"""
(?P<email>
  (?<![\w.%+\-])
  [\w.%+\-]+ @ [\w\-]+ (?:\.[\w\-]+)* \.[^\W\d_]{2,}
  (?![\w\-])
)"""

# Country code, two check digits, then the account part in groups of four (spaces optional)
# and a short last group. The mod-97 check decides; see `_iban_match`.
_IBAN = r"""
(?P<iban>
  (?<!\w)
  [A-Z]{2}\d{2} (?:\x20?[A-Z0-9]{4}){2,7} (?:\x20?[A-Z0-9]{1,3})?
  (?!\w)
)"""

# 13-19 digits, first digit 1-9 (issuer numbers never start with 0): contiguous, in groups of
# four with a consistent space or dash (the last group 1-3 digits long may be a 19-digit
# card's tail), or the 4-6-4/4-6-5 grouping of Diners and Amex.
_CARD = r"""
(?P<card>
  (?<![\w+\-.])
  [1-9]
  (?:
    \d{12,18} (?!\w|[.,]\d)
  | \d{3} (?P<cs>[\x20\-]) \d{4} (?P=cs) \d{4} (?P=cs) \d{1,4} (?:(?P=cs)\d{1,3})?
    (?!\w|(?P=cs)\d)
  | \d{3} (?P<cs6>[\x20\-]) \d{6} (?P=cs6) \d{4,5}
    (?!\w|(?P=cs6)\d)
  )
)"""

# Hex groups and colons (at least two colons), optionally ending in a dotted quad; whether it
# is an address is left to `ipaddress`.
_IPV6 = r"""
(?P<ipv6>
  (?<![\w.])
  (?:[0-9A-Fa-f]{0,4}:){2,7}
  (?:(?:\d{1,3}\.){3}\d{1,3} | [0-9A-Fa-f]{1,4})?
  (?!\w|\.\d)
)"""

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = rf"""
(?P<ipv4>
  (?<![\w.])
  {_OCTET} (?:\.{_OCTET}){{3}}
  (?!\w|\.\d)
)"""

# International: "+" or "00", then digit groups joined by a space, a dash or parentheses.
# Every join is at least one non-digit, so there is exactly one way to split the digits
# (no catastrophic backtracking). The digit count is checked in `_phone_match`.
_PHONE_INTL = r"""
(?P<phone_intl>
  (?<![\w+\-./])
  (?:\+ | 00(?=[1-9]))
  \d{1,15}
  (?: (?: [\x20\-] | \)?[\x20\-]?\( | \)[\x20\-]? ) \d{1,15} )*
  (?!\w|[.:/,]\d)
)"""

# National: an area code in parentheses, or digit groups with one consistent separator
# (so "2026-11-27 10" never reads as one number). Digit groups that cannot reach the 9 digits
# of a phone number (dates, mostly) are not even candidates: as a rejected candidate they
# would only let the scan resume after their first group, where it goes on anyway.
_PHONE_NATIONAL = r"""
(?P<phone_nat>
  (?<![\w+\-./])
  (?:
    \(\d{1,5}\) [\x20\-]? \d{2,8} (?:[\x20\-]\d{2,8}){0,3}
    (?!\w|[.:/,]\d)
  | (?=(?:\d[\x20\-]?){9}) \d{2,5} (?P<ps>[\x20\-]) \d{2,8} (?:(?P=ps)\d{2,8}){0,3}
    (?!\w|(?P=ps)\d|[.:/,]\d)
  )
)"""


# The scanner of a text: `match` for a candidate at position 0 and `search` for one whose
# first character follows a non-word character at or after the given position.
_Scanner: TypeAlias = tuple[
    Callable[[str], "re.Match[str] | None"], Callable[[str, int], "re.Match[str] | None"]
]


def _compile_candidates(*, email: bool, ipv6: bool, ascii: bool) -> _Scanner:
    """Combine the alternatives that can occur in a text, in their priority order.

    Speed: the scan visits every position of the text, so the alternatives that need a
    digit, a ``+``, a ``(`` or an upper-case letter sit behind one character-class guard,
    and the e-mail and IPv6 alternatives (which may start at any letter) are only included
    for texts holding an ``@`` or two ``:``. Every alternative starts after a non-word
    character (its lookbehind says so), so the scan proper consumes that character first:
    a pattern that starts with a character class lets the regex engine skip to the next
    candidate in C instead of trying the alternatives at every position. Only a match at
    the very start of the text has no such character; it is tried once with ``match``.
    ASCII texts, most of them, get patterns compiled with `re.ASCII`, whose ``\\d`` and
    ``\\w`` are cheaper ranges and mean exactly the same on ASCII text.
    """
    guarded = [_IBAN, _CARD, *([_IPV6] if ipv6 else []), _IPV4, _PHONE_INTL, _PHONE_NATIONAL]
    first_chars = r"\d(+A-Z" + (":a-f" if ipv6 else "")
    pattern = rf"(?=[{first_chars}])(?:{'|'.join(guarded)})"
    if email:
        pattern = f"{_EMAIL}|{pattern}"
    flags = re.VERBOSE | (re.ASCII if ascii else 0)
    at_start = re.compile(pattern, flags)
    after_boundary = re.compile(rf"[^\w](?:{pattern})", flags)
    return at_start.match, after_boundary.search


_SCANNERS: dict[tuple[bool, bool, bool], _Scanner] = {
    (ascii, email, ipv6): _compile_candidates(email=email, ipv6=ipv6, ascii=ascii)
    for ascii in (False, True)
    for email in (False, True)
    for ipv6 in (False, True)
}
_PHONE_ONLY = re.compile(f"{_PHONE_INTL}|{_PHONE_NATIONAL}", re.VERBOSE)
_CARD_ONLY = re.compile(_CARD, re.VERBOSE)
_DIGIT = re.compile(r"\d")
_DIGITS_RUN = re.compile(r"\d+")

_PHONE_MIN_DIGITS = 9
_PHONE_MAX_DIGITS = 15  # E.164, country code included, prefix excluded
_CARD_MIN_DIGITS = 13
_CARD_MAX_DIGITS = 19
_SHORT = 15  # texts shorter than the shortest IBAN (Norway's), for a cheaper pre-check

# Luhn doubles every second digit from the right: 0→0, 1→2, …, 5→1 (10-9), …, 9→9.
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")
# ISO 13616 reads a letter as a two-digit number: A is 10, …, Z is 35 (and a digit as itself).
_IBAN_VALUES: dict[str, str] = {
    char: str(int(char, 36)) for char in string.ascii_letters + string.digits
}


def _luhn_valid(digits: str) -> bool:
    """Say whether a string of decimal digits passes the Luhn check used by payment cards."""
    if digits.isascii():
        raw = digits.encode("ascii")
        plain = raw[-1::-2]
        doubled = raw[-2::-2].translate(_LUHN_DOUBLED)
        return (sum(plain) + sum(doubled) - 48 * len(raw)) % 10 == 0
    # Other decimal digits (``\d`` matches them) keep their historical weight.
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _iban_valid(iban: str) -> bool:
    """Say whether an IBAN (spaces allowed) passes the ISO 13616 mod-97 check."""
    compact = iban.replace(" ", "")
    if not 15 <= len(compact) <= 34 or not compact.isascii() or not compact.isalnum():
        return False
    account = compact[4:]  # usually all digits
    if not account.isdigit():
        account = "".join(map(_IBAN_VALUES.__getitem__, account))
    head = "".join(map(_IBAN_VALUES.__getitem__, compact[:4]))
    return int(account + head) % 97 == 1


# A candidate's verdict: the kind found, by its value (None: not personal data), and the
# slice of the text it covers, which may be shorter than the regex match when only a part
# validates. Scanning resumes at the slice's end, so a rejected candidate may leave room for
# another one.
_Verdict: TypeAlias = tuple[str | None, int, int]


def _card_match(text: str, start: int, end: int, separator: str | None) -> _Verdict:
    span = text[start:end]
    digits = span.replace(" ", "").replace("-", "")
    if _luhn_valid(digits):
        return _CARD_KEY, start, end
    # "4111 1111 1111 1111 123": the CVV or an expiry after the card became its 19-digit tail.
    if separator and span.count(separator) == 4:
        head = span[: span.rindex(separator)]
        if _luhn_valid(head.replace(separator, "")):
            return _CARD_KEY, start, start + len(head)
    # Not a card, but a 13-15 digit number grouped like one may still be a phone number.
    if len(digits) <= _PHONE_MAX_DIGITS and _PHONE_ONLY.fullmatch(span):
        return _PHONE_KEY, start, end
    return None, start, end


def _phone_digits(span: str) -> int:
    """Count the digits of a phone candidate: all of it but the joiners " -()" and "+"."""
    if span.isascii():
        return len(span.encode("ascii").translate(None, b" -()+"))
    return len(span) - sum(span.count(joiner) for joiner in " -()+")


def _phone_intl_match(text: str, start: int, end: int) -> _Verdict:
    span = text[start:end]
    length = _phone_digits(span)
    digits = length
    if span.startswith("00"):
        digits -= 2
        if length == len(span):  # "0012345678" is an order number, not a dialled number
            return None, start, end
    if digits > _PHONE_MAX_DIGITS:
        # Trailing groups past 15 digits belong to whatever follows the number.
        runs = list(_DIGITS_RUN.finditer(span))
        while digits > _PHONE_MAX_DIGITS and len(runs) > 1:
            digits -= len(runs.pop().group())
        if _PHONE_MIN_DIGITS <= digits <= _PHONE_MAX_DIGITS:
            return _PHONE_KEY, start, start + runs[-1].end()
        return None, start, end
    if digits >= _PHONE_MIN_DIGITS:  # the candidate ends in a digit
        return _PHONE_KEY, start, end
    return None, start, end


def _phone_national_match(text: str, start: int, end: int, separator: str | None) -> _Verdict:
    span = text[start:end]
    digits = _phone_digits(span)
    if _PHONE_MIN_DIGITS <= digits <= _PHONE_MAX_DIGITS:
        return _PHONE_KEY, start, end
    # The first group of digits ends at the first separator, or at the area code's ")".
    first_run_end = span.index(separator or ")")
    if digits < _PHONE_MIN_DIGITS:
        # "order 12 555-123-4567": the first group may be a quantity before the real number.
        return None, start, start + first_run_end
    # "qty 12 4111 1111 1111 1111": a card after a quantity; anything else stays whole.
    second_run = _DIGITS_RUN.search(span, first_run_end)
    assert second_run is not None  # a national candidate has at least two groups
    card = _CARD_ONLY.match(text, start + second_run.start())
    if card is not None:
        card_start, card_end = card.span()
        verdict = _card_match(text, card_start, card_end, card.group("cs"))
        if verdict[0] == _CARD_KEY:
            return verdict
    return None, start, end


def _iban_match(text: str, start: int, end: int) -> _Verdict:
    span = text[start:end]
    if _iban_valid(span):
        return _IBAN_KEY, start, end
    # A following upper-case word or number may have been taken as a last group.
    while " " in span[5:]:
        span = span[: span.rindex(" ")]
        if _iban_valid(span):
            return _IBAN_KEY, start, start + len(span)
    return None, start, end


def _ipv6_match(text: str, start: int, end: int) -> _Verdict:
    span = text[start:end]
    if span.endswith(":") and not span.endswith("::"):
        span = span[:-1]  # "fe80::1:" at the end of a clause
    if not _DIGIT.search(span):  # "::" alone, or words such as "add::"
        return None, start, end
    try:
        ipaddress.IPv6Address(span)
    except ValueError:
        return None, start, end
    return _IP_KEY, start, start + len(span)


class Redactor:
    """Replaces personal data in text and in parsed JSON with typed placeholders.

    A redactor holds no per-event state and is safe to share between threads; build one per
    service from its settings and reuse it for every event.
    """

    def __init__(self, kinds: Iterable[PiiKind] = ALL_KINDS) -> None:
        """Redact only ``kinds``; values of other kinds are left as they are.

        Disabled kinds are still recognised, so that, say, a card number is never redacted
        as a phone number when cards are switched off.
        """
        self.kinds: frozenset[PiiKind] = frozenset(kinds)
        self._placeholders: dict[str, str] = {
            kind.value: _PLACEHOLDERS[kind] for kind in self.kinds
        }  # the enabled kinds, by value

    def redact_text(self, text: str, counts: collections.Counter[str]) -> str:
        """Replace each PII value with its typed placeholder.

        Adds one to ``counts[kind.value]`` per replacement.
        Text without an ``@``, a digit or two ``:`` cannot hold any of the recognised kinds
        and is returned as is without running a regular expression.
        """
        if text.isalpha():  # a word: no digit, "@" or ":"
            return text
        has_at = "@" in text
        has_colons = text.count(":") >= 2
        is_ascii = text.isascii()
        if not has_at and not has_colons:
            if is_ascii and len(text) < _SHORT:
                # Too short for an IBAN; a phone or card needs 9 digits, an IPv4 three dots.
                digits = len(text) - len(text.encode("ascii").translate(None, b"0123456789"))
                if digits < _PHONE_MIN_DIGITS and text.count(".") < 3:
                    return text
            elif _DIGIT.search(text) is None:
                return text
        scanner = _SCANNERS[is_ascii, has_at, has_colons]
        found: list[str] = []  # the kind of each replacement
        redacted = self._scan(text, scanner, found)
        for kind in found:
            counts[kind] += 1
        return redacted

    def _scan(self, text: str, scanner: _Scanner, found: list[str]) -> str:
        """Redact ``text`` with ``scanner``; append each replacement's kind to ``found``."""
        match_at_start, search_after_boundary = scanner
        pieces: list[str] = []
        copied = 0  # text[:copied] is already in pieces
        placeholders = self._placeholders
        match = match_at_start(text) or search_after_boundary(text, 0)
        while match is not None:
            group = match.lastgroup
            start, end = match.span(match.lastindex or 0)
            verdict: _Verdict
            if group == "email":
                verdict = _EMAIL_KEY, start, end
            elif group == "phone_intl":
                verdict = _phone_intl_match(text, start, end)
            elif group == "phone_nat":
                verdict = _phone_national_match(text, start, end, match.group("ps"))
            elif group == "card":
                verdict = _card_match(text, start, end, match.group("cs"))
            elif group == "ipv4":
                verdict = _IP_KEY, start, end
            elif group == "ipv6":
                verdict = _ipv6_match(text, start, end)
            else:
                verdict = _iban_match(text, start, end)
            kind, start, position = verdict
            if kind is not None and kind in placeholders:
                found.append(kind)
                if not start and position == len(text):  # the whole text, e.g. a contact field
                    return placeholders[kind]
                pieces.append(text[copied:start])
                pieces.append(placeholders[kind])
                copied = position
            # A candidate at `position` follows the character before it (see the scanners).
            match = search_after_boundary(text, position - 1)
        if not pieces:
            return text
        pieces.append(text[copied:])
        return "".join(pieces)

    def redact_value(self, value: JsonValue, counts: collections.Counter[str]) -> JsonValue:
        """Recursively redact a parsed JSON value.

        Strings, list items and dict values are redacted; dict keys are kept. An int of
        13-19 digits passing Luhn becomes the ``"<CARD>"`` string when CARD is enabled;
        other scalars are unchanged.
        Containers are copied, never changed in place, so the caller's event stays intact.
        """
        if isinstance(value, str):
            return self.redact_text(value, counts)
        if isinstance(value, dict):
            redact_text = self.redact_text
            redact_value = self.redact_value
            return {
                key: redact_text(item, counts) if type(item) is str else redact_value(item, counts)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.redact_value(item, counts) for item in value]
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and _CARD_KEY in self._placeholders
            and value > 0
        ):
            digits = str(value)
            if _CARD_MIN_DIGITS <= len(digits) <= _CARD_MAX_DIGITS and _luhn_valid(digits):
                counts[PiiKind.CARD.value] += 1
                return _PLACEHOLDERS[PiiKind.CARD]
        return value
