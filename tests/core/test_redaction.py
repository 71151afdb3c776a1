"""What ingest's redactor promises: typed placeholders for PII, nothing else touched."""

from __future__ import annotations

import collections
import json

import pytest

from tunewire.core.text import redaction
from tunewire.core.text.redaction import PiiKind


def redact(
    text: str, kinds: frozenset[PiiKind] = redaction.ALL_KINDS
) -> tuple[str, dict[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    return redaction.Redactor(kinds).redact_text(text, counts), dict(counts)


DETECTED = [
    # e-mail
    pytest.param(PiiKind.EMAIL, "john.doe@example.com", id="email"),
    pytest.param(PiiKind.EMAIL, "a.b+tag@mail.example.co.uk", id="email-plus-subdomain"),
    pytest.param(PiiKind.EMAIL, "jürgen@beispiel.de", id="email-unicode"),
    # phone
    pytest.param(PiiKind.PHONE, "+44 20 7946 0958", id="phone-uk-intl"),
    pytest.param(PiiKind.PHONE, "+1 (555) 123-4567", id="phone-us-intl-parens"),
    pytest.param(PiiKind.PHONE, "555-123-4567", id="phone-us-national"),
    pytest.param(PiiKind.PHONE, "(555) 123-4567", id="phone-us-parens"),
    pytest.param(PiiKind.PHONE, "030 1234 5678", id="phone-de-national"),
    pytest.param(PiiKind.PHONE, "+33 6 12 34 56 78", id="phone-fr-intl"),
    pytest.param(PiiKind.PHONE, "0044 20 7946 0958", id="phone-00-prefix"),
    pytest.param(PiiKind.PHONE, "+4915112345678", id="phone-intl-compact"),
    pytest.param(PiiKind.PHONE, "+44 (0)20 7946 0958", id="phone-uk-trunk-zero"),
    # card
    pytest.param(PiiKind.CARD, "4111 1111 1111 1111", id="card-visa-spaces"),
    pytest.param(PiiKind.CARD, "4111-1111-1111-1111", id="card-visa-dashes"),
    pytest.param(PiiKind.CARD, "4111111111111111", id="card-visa-compact"),
    pytest.param(PiiKind.CARD, "5555 5555 5555 4444", id="card-mastercard"),
    pytest.param(PiiKind.CARD, "378282246310005", id="card-amex-compact"),
    pytest.param(PiiKind.CARD, "3782 822463 10005", id="card-amex-grouped"),
    pytest.param(PiiKind.CARD, "4222222222222", id="card-visa-13"),
    pytest.param(PiiKind.CARD, "6011 0009 9013 9424 009", id="card-19-digits"),
    # IBAN
    pytest.param(PiiKind.IBAN, "DE89 3704 0044 0532 0130 00", id="iban-de-grouped"),
    pytest.param(PiiKind.IBAN, "DE89370400440532013000", id="iban-de-compact"),
    pytest.param(PiiKind.IBAN, "GB82 WEST 1234 5698 7654 32", id="iban-gb-letters"),
    pytest.param(PiiKind.IBAN, "NO93 8601 1117 947", id="iban-no-shortest"),
    pytest.param(PiiKind.IBAN, "FR14 2004 1010 0505 0001 3M02 606", id="iban-fr"),
    # IP
    pytest.param(PiiKind.IP, "192.168.1.10", id="ipv4"),
    pytest.param(PiiKind.IP, "255.255.255.0", id="ipv4-edges"),
    pytest.param(PiiKind.IP, "0.0.0.0", id="ipv4-zero"),
    pytest.param(PiiKind.IP, "2001:db8::8a2e:370:7334", id="ipv6-compressed"),
    pytest.param(PiiKind.IP, "2001:0db8:85a3:0000:0000:8a2e:0370:7334", id="ipv6-full"),
    pytest.param(PiiKind.IP, "::1", id="ipv6-loopback"),
    pytest.param(PiiKind.IP, "fe80::1", id="ipv6-link-local"),
    pytest.param(PiiKind.IP, "::ffff:192.0.2.1", id="ipv6-mapped-v4"),
]


@pytest.mark.parametrize(("kind", "value"), DETECTED)
@pytest.mark.parametrize(
    ("before", "after"),
    [("", ""), ("Contact: ", " — thanks."), ("(", ")"), ("Hi\n", "\nBye")],
    ids=["alone", "in-sentence", "in-parens", "own-line"],
)
def test_each_kind_is_replaced_whole_by_its_placeholder(
    kind: PiiKind, value: str, before: str, after: str
) -> None:
    out, counts = redact(f"{before}{value}{after}")
    assert out == f"{before}{redaction.placeholder(kind)}{after}"
    assert counts == {kind.value: 1}


NOT_PII: list[tuple[str, str]] = [
    ("date-iso", "Delivered on 2026-11-27."),
    ("date-eu", "Delivered on 27/11/2026."),
    ("datetime", "Opened 2026-11-27 10:30 by the night shift."),
    ("datetime-seconds", "Opened 2026-11-27 10:30:45 by the night shift."),
    ("iso-timestamp", "at 2026-11-27T10:30:45Z"),
    ("time", "Every morning at 10:30:45 it crashes."),
    ("order-number", "Order ORD-2026-1142 is late."),
    ("invoice-number", "Invoice INV-00012345 was paid twice."),
    ("invoice-number-spaced", "Invoice number 00012345678 was paid twice."),
    ("version-long", "Running version 1.2.3.4.5 since Monday."),
    ("version-prefixed", "Upgraded to v1.2.3.4 and 4.12.3."),
    ("small-numbers", "I bought 3 items for 42 EUR, 12 of 100 units."),
    ("amount", "Charged 1,299.00 EUR and 12,345,678.90 USD."),
    ("card-fails-luhn", "Reference 4111 1111 1111 1112 in the letter."),
    ("card-fails-luhn-compact", "Reference 4111111111111112 in the letter."),
    ("card-leading-zero", "0000 0000 0000 0000 is a test pattern."),
    ("grouped-20-digits", "Tracking 1234 5678 9012 3456 7890 (not a card)."),
    ("iban-fails-mod97", "Pay to DE89 3704 0044 0532 0130 01 please."),
    ("iban-fails-mod97-compact", "Pay to DE00370400440532013000 please."),
    ("ipv4-octet-out-of-range", "Seen from 256.1.1.1 and 999.10.10.10."),
    ("ipv6-bare-double-colon", "C++ uses :: for scopes, e.g. std::vector."),
    ("ipv6-mac-address", "MAC 00:1a:2b:3c:4d:5e flapping."),
    ("hex-words", "Error: bad:: dead::beef"),
    ("short-phone", "Call 555-1234 or extension 12 34."),
    ("at-sign-no-domain", "Meet @ 5, ping @alice"),
    ("placeholders", "<EMAIL> <PHONE> <CARD> <IBAN> <IP>"),
    ("unicode-no-pii", "Grüße aus Köln — 東京 ✓ naïve café"),
]


@pytest.mark.parametrize("text", [t for _, t in NOT_PII], ids=[n for n, _ in NOT_PII])
def test_look_alikes_are_left_alone(text: str) -> None:
    assert redact(text) == (text, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A CVV or an expiry after a card must not hide the card.
        ("card 4111 1111 1111 1111 123 exp 12/27", "card <CARD> 123 exp 12/27"),
        ("card 4111 1111 1111 1111 12/27", "card <CARD> 12/27"),
        # A quantity just before a card or phone does not hide it.
        ("qty 12 4111 1111 1111 1111", "qty 12 <CARD>"),
        ("qty 12 4111111111111111", "qty 12 <CARD>"),
        ("order 12 555-123-4567", "order 12 <PHONE>"),
        # Dates or times next to a phone stay, the phone goes.
        ("2026-11-27 555-123-4567", "2026-11-27 <PHONE>"),
        ("555-123-4567 2026-11-27", "<PHONE> 2026-11-27"),
        ("+44 20 7946 0958 2026-11-27", "<PHONE> 2026-11-27"),
        ("+44 20 7946 0958 at 10:30", "<PHONE> at 10:30"),
        # An upper-case word after an IBAN is not part of it.
        ("BE68 5390 0754 7034 THANKS", "<IBAN> THANKS"),
        # Sentence punctuation stays outside.
        ("see 192.168.1.10.", "see <IP>."),
        ("ip fe80::1: down", "ip <IP>: down"),
        ("addr:fe80::1", "addr:<IP>"),
        ("mail john@example.com.", "mail <EMAIL>."),
        ("x@john@example.com", "x@<EMAIL>"),
    ],
)
def test_neighbours_are_kept_and_values_never_half_redacted(text: str, expected: str) -> None:
    assert redact(text)[0] == expected


def test_counts_add_one_per_replacement_and_accumulate() -> None:
    redactor = redaction.Redactor()
    counts: collections.Counter[str] = collections.Counter({"email": 2})
    text = (
        "a@example.com and b@example.org, call +44 20 7946 0958 or 555-123-4567, "
        "card 4111 1111 1111 1111, iban DE89370400440532013000, ip 10.0.0.1 / ::1"
    )
    out = redactor.redact_text(text, counts)
    assert counts == {"email": 4, "phone": 2, "card": 1, "iban": 1, "ip": 2}
    assert out == (
        "<EMAIL> and <EMAIL>, call <PHONE> or <PHONE>, card <CARD>, iban <IBAN>, ip <IP> / <IP>"
    )


@pytest.mark.parametrize("disabled", list(PiiKind), ids=[k.value for k in PiiKind])
def test_disabled_kind_is_left_and_not_counted(disabled: PiiKind) -> None:
    values = {
        PiiKind.EMAIL: "a@example.com",
        PiiKind.PHONE: "+44 20 7946 0958",
        PiiKind.CARD: "4111 1111 1111 1111",
        PiiKind.IBAN: "DE89 3704 0044 0532 0130 00",
        PiiKind.IP: "10.0.0.1",
    }
    text = " | ".join(values.values())
    out, counts = redact(text, redaction.ALL_KINDS - {disabled})
    expected = " | ".join(
        value if kind is disabled else redaction.placeholder(kind) for kind, value in values.items()
    )
    assert out == expected
    assert disabled.value not in counts
    assert sum(counts.values()) == len(PiiKind) - 1


def test_disabled_card_is_not_redacted_as_a_phone_instead() -> None:
    assert redact("pay 4111 1111 1111 1111 now", frozenset({PiiKind.PHONE})) == (
        "pay 4111 1111 1111 1111 now",
        {},
    )


def test_no_kinds_means_no_change() -> None:
    text = "a@example.com +44 20 7946 0958 10.0.0.1"
    assert redact(text, frozenset()) == (text, {})


def test_placeholder_names_every_kind() -> None:
    assert {kind: redaction.placeholder(kind) for kind in PiiKind} == {
        PiiKind.EMAIL: "<EMAIL>",
        PiiKind.PHONE: "<PHONE>",
        PiiKind.CARD: "<CARD>",
        PiiKind.IBAN: "<IBAN>",
        PiiKind.IP: "<IP>",
    }
    assert frozenset(PiiKind) == redaction.ALL_KINDS


def test_unicode_text_around_pii_is_preserved() -> None:
    text = "Müller schrieb an jürgen@beispiel.de — Tel. +49 30 1234567 📞, 東京 IP 10.1.2.3 ✓"
    out, counts = redact(text)
    assert out == "Müller schrieb an <EMAIL> — Tel. <PHONE> 📞, 東京 IP <IP> ✓"
    assert counts == {"email": 1, "phone": 1, "ip": 1}


def test_nested_json_values_are_redacted_and_keys_kept() -> None:
    event = json.loads(
        """{
          "ticket": {"id": 1142, "body": "mail me at a@example.com",
                     "a@example.com": "key with an address stays a key"},
          "payments": [{"card": 4111111111111111, "iban": "DE89370400440532013000"},
                       {"card": 4111111111111112, "amount": 1299.0}],
          "tags": ["vip", "from 10.0.0.1", null, true, 12],
          "phone": "+44 20 7946 0958"
        }"""
    )
    original = json.loads(json.dumps(event))
    counts: collections.Counter[str] = collections.Counter()
    out = redaction.Redactor().redact_value(event, counts)
    assert out == {
        "ticket": {
            "id": 1142,
            "body": "mail me at <EMAIL>",
            "a@example.com": "key with an address stays a key",
        },
        "payments": [
            {"card": "<CARD>", "iban": "<IBAN>"},
            {"card": 4111111111111112, "amount": 1299.0},
        ],
        "tags": ["vip", "from <IP>", None, True, 12],
        "phone": "<PHONE>",
    }
    assert counts == {"email": 1, "card": 1, "iban": 1, "ip": 1, "phone": 1}
    assert event == original, "the caller's event must not be changed in place"


@pytest.mark.parametrize(
    ("value", "kinds", "expected"),
    [
        (4111111111111111, redaction.ALL_KINDS, "<CARD>"),
        (4222222222222, redaction.ALL_KINDS, "<CARD>"),  # 13 digits
        (4111111111111111, redaction.ALL_KINDS - {PiiKind.CARD}, 4111111111111111),
        (4111111111111112, redaction.ALL_KINDS, 4111111111111112),  # fails Luhn
        (-4111111111111111, redaction.ALL_KINDS, -4111111111111111),
        (424242424242, redaction.ALL_KINDS, 424242424242),  # 12 digits, passes Luhn
        (42424242424242424242, redaction.ALL_KINDS, 42424242424242424242),  # 20 digits
        (True, redaction.ALL_KINDS, True),
        (3.5, redaction.ALL_KINDS, 3.5),
        (None, redaction.ALL_KINDS, None),
    ],
)
def test_scalars(value: redaction.JsonValue, kinds: frozenset[PiiKind], expected: object) -> None:
    counts: collections.Counter[str] = collections.Counter()
    assert redaction.Redactor(kinds).redact_value(value, counts) == expected
    assert counts == ({"card": 1} if expected == "<CARD>" else {})


IDEMPOTENCE_TEXTS = (
    [p.values[1] for p in DETECTED]
    + [t for _, t in NOT_PII]
    + [
        "x@john@example.com +44 20 7946 0958 2026-11-27 4111 1111 1111 1111 123",
        "qty 12 4111 1111 1111 1111, DE89 3704 0044 0532 0130 00 EUR, fe80::1: ok",
        "Call (555) 123-4567 or 030 1234 5678 12 times from 192.168.0.1.",
    ]
)


@pytest.mark.parametrize("text", IDEMPOTENCE_TEXTS)
def test_redacting_redacted_text_changes_nothing(text: str) -> None:
    once, _ = redact(text)
    assert redact(once) == (once, {})


def test_long_adversarial_input_stays_linear() -> None:
    """A pathological text must not stall the hot path (catastrophic backtracking)."""
    text = "1 " * 5000 + "+1 (2" * 2000 + "a." * 5000 + "@" + "1a:" * 3000 + "7" * 5000
    out, _ = redact(text)
    assert len(out) > 0
