"""Sample data for the demo, the tests and the benchmarks: an objective and its events.

The ticket generator is seeded, so a run is reproducible, and it plants realistic PII
(e-mail addresses, phone numbers, card numbers that pass Luhn, IBANs, IP addresses) in the
text, so the redaction is exercised on every run.
"""

from __future__ import annotations

import datetime
import importlib.resources
import random
from collections.abc import Iterator
from typing import Any

import yaml

_SUBJECTS = {
    "refund": ["Refund request", "I want my money back", "Charged twice for order"],
    "shipping": ["Where is my parcel?", "Delivery is late", "Tracking not updating"],
    "account": ["Cannot log in", "Password reset not arriving", "Account locked"],
    "warranty": ["Blender stopped working", "Warranty claim", "Screen broken after a week"],
}
_BODIES = {
    "refund": [
        "I returned the item on {date} and still have no refund. Please send the money back to "
        "my card {card}.",
        "You charged twice for order {order}. Refund the duplicate to IBAN {iban} please.",
    ],
    "shipping": [
        "My order {order} was supposed to be delivered on {date} but the tracking shows nothing."
        " Call me on {phone}.",
        "The parcel for {order} is late again. Contact {email} with an update.",
    ],
    "account": [
        "I cannot log in since {date}; the password reset mail never reaches {email}.",
        "My account was locked after a login from {ip}. Please call {phone}.",
    ],
    "warranty": [
        "The blender from order {order} stopped working after two weeks. Is it under warranty? "
        "Reach me at {email}.",
        "The screen is broken. Warranty says two years; I bought it on {date}. Phone: {phone}.",
    ],
}
_CARDS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011111111111117"]
_IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606"]
_PHONES = ["+44 20 7946 0958", "+1 (555) 123-4567", "030 1234 5678", "+33 6 12 34 56 78"]
_NAMES = ["alice", "bob", "carol", "dmitri", "eve", "farah", "gus", "hana"]

LABELS = tuple(_SUBJECTS)


def support_intent_spec() -> dict[str, Any]:
    """The sample objective as a parsed document."""
    text = importlib.resources.files("tunewire.samples").joinpath("support-intent.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def tickets(count: int, *, seed: int = 7, start: int = 0) -> Iterator[dict[str, Any]]:
    """Structured CloudEvents of ``ticket.created`` with PII in their text."""
    rng = random.Random(seed)
    day = datetime.date(2026, 11, 1)
    for number in range(start, start + count):
        intent = rng.choice(LABELS)
        values = {
            "date": (day + datetime.timedelta(days=rng.randrange(30))).isoformat(),
            "order": f"ORD-{rng.randrange(10_000, 99_999)}",
            "card": rng.choice(_CARDS),
            "iban": rng.choice(_IBANS),
            "phone": rng.choice(_PHONES),
            "email": f"{rng.choice(_NAMES)}.{rng.randrange(100)}@example.com",
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
        }
        yield {
            "specversion": "1.0",
            "id": f"ticket-{seed}-{number}",
            "type": "ticket.created",
            "source": "helpdesk/eu",
            "time": f"{values['date']}T09:{number % 60:02d}:00Z",
            "data": {
                "ticket_id": f"T-{seed}-{number:06d}",
                "channel": rng.choice(["email", "chat", "web"]),
                "subject": rng.choice(_SUBJECTS[intent]),
                "body": rng.choice(_BODIES[intent]).format(**values),
                "customer": {"email": values["email"], "phone": values["phone"]},
            },
        }


#: The PII values the generator plants, for tests that prove none survives redaction.
PLANTED_PII = (*_CARDS, *_IBANS, *_PHONES, "@example.com", "203.0.113.")
