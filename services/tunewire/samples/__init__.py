"""Sample data for the demo, the tests and the benchmarks: an objective and its events.

The ticket generator is seeded, so a run is reproducible. Each ticket is put together from
several independent parts (opening, product, the problem in one of many phrasings, a detail,
a closing), so tickets of the same intent differ in wording and the near-duplicate filter
keeps most of them, as it would with real traffic. It plants realistic PII (e-mail
addresses, phone numbers, card numbers that pass Luhn, IBANs, IP addresses) in the text, so
the redaction is exercised on every run.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import json
import random
from collections.abc import Iterator
from typing import Any

import yaml

from tunewire.core.bus import envelope

_PRODUCTS = [
    "blender",
    "coffee machine",
    "desk lamp",
    "kettle",
    "headphones",
    "office chair",
    "vacuum cleaner",
    "smart watch",
    "rice cooker",
    "electric toothbrush",
    "air fryer",
    "bluetooth speaker",
    "standing desk",
    "e-reader",
    "hair dryer",
    "monitor arm",
]
_OPENINGS = [
    "Hello,",
    "Hi there,",
    "Good morning,",
    "Dear support team,",
    "Hey,",
    "To whom it may concern,",
    "Hi,",
    "Hello team,",
    "",
]
_CLOSINGS = [
    "Thanks.",
    "Thank you in advance.",
    "Kind regards.",
    "Please help.",
    "Cheers.",
    "Looking forward to your reply.",
    "Best wishes.",
    "",
]
_SUBJECTS = {
    "refund": [
        "Refund request",
        "I want my money back",
        "Charged twice for my order",
        "Refund still missing",
        "Return and refund",
        "Money back please",
    ],
    "shipping": [
        "Where is my parcel?",
        "Delivery is late",
        "Tracking not updating",
        "Package not delivered",
        "Late delivery",
        "Parcel lost in transit",
    ],
    "account": [
        "Cannot log in",
        "Password reset not arriving",
        "Account locked",
        "Login problem",
        "Locked out of my account",
        "Two-factor code never comes",
    ],
    "warranty": [
        "Stopped working",
        "Warranty claim",
        "Broken after a week",
        "Faulty device under warranty",
        "Repair under warranty",
        "Defective item",
    ],
}
_PROBLEMS = {
    "refund": [
        "I returned the {product} on {date} and I am still waiting for my refund.",
        "you charged twice for order {order} and I would like a refund for the duplicate.",
        "I cancelled order {order} but the money back has not arrived.",
        "the refund for my {product} never reached my card {card}.",
        "please refund the {product}; the return was accepted on {date}.",
        "I was promised my money back within five days and nothing came.",
        "the {product} was delivered damaged, so I want my money back.",
        "I do not want the {product} any more; how do I get my payment reversed?",
    ],
    "shipping": [
        "my {product} from order {order} was supposed to be delivered on {date}.",
        "the tracking for order {order} has not changed for a week.",
        "the parcel with my {product} is late and the courier does not answer.",
        "the delivery window passed on {date} and no parcel arrived.",
        "your site says delivered but there is no parcel at my door.",
        "the tracking link for my {product} shows an error.",
        "I need the {product} before the weekend, can you check where it is?",
        "the courier left a note but the {product} is nowhere to be found.",
    ],
    "account": [
        "I cannot log in to my account since {date}.",
        "the password reset mail never reaches {email}.",
        "my account got locked after a login from {ip}.",
        "the login page keeps saying my password is wrong.",
        "my account is locked and the unlock link has expired.",
        "I changed my password yesterday and now I cannot log in at all.",
        "something is wrong with my profile page; my details are gone.",
        "my account shows someone else's address, is my data safe?",
    ],
    "warranty": [
        "the {product} stopped working after two weeks.",
        "the {product} from order {order} is broken and should be under warranty.",
        "I bought the {product} on {date} and it already stopped working.",
        "the screen of my {product} is broken; the warranty says two years.",
        "my {product} makes a burning smell and stopped working.",
        "I would like a warranty repair for my {product}.",
        "the {product} arrived broken and I want a refund or a repair.",
        "the {product} does not turn on any more, what can you do?",
    ],
}
_DETAILS = [
    "You can call me on {phone}.",
    "My e-mail is {email}.",
    "Reach me at {email} or {phone}.",
    "I have attached photos.",
    "This is the second time I write.",
    "Order number {order}.",
    "My IBAN is {iban} if that helps.",
    "I paid with card {card}.",
    "",
    "I am available every afternoon.",
    "My customer number is C-{customer}.",
]
_CARDS = ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011111111111117"]
_IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606"]
_PHONES = ["+44 20 7946 0958", "+1 (555) 123-4567", "030 1234 5678", "+33 6 12 34 56 78"]
_NAMES = ["alice", "bob", "carol", "dmitri", "eve", "farah", "gus", "hana", "ivan", "jun"]

LABELS = tuple(_SUBJECTS)


def support_intent_spec() -> dict[str, Any]:
    """The sample objective as a parsed document."""
    text = importlib.resources.files("tunewire.samples").joinpath("support-intent.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def tickets(count: int, *, seed: int = 7, start: int = 0) -> Iterator[dict[str, Any]]:
    """Structured CloudEvents of ``ticket.created`` with PII in their text."""
    for event, _ in labelled_tickets(count, seed=seed, start=start):
        yield event


def labelled_tickets(
    count: int, *, seed: int = 7, start: int = 0
) -> Iterator[tuple[dict[str, Any], str]]:
    """Tickets with the intent they were written for (what a careful annotator would say)."""
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
            "product": rng.choice(_PRODUCTS),
            "customer": str(rng.randrange(1000, 9999)),
        }
        problem = rng.choice(_PROBLEMS[intent]).format(**values)
        parts = [
            rng.choice(_OPENINGS),
            ("Unfortunately " if rng.random() < 0.5 else "") + problem,
            rng.choice(_DETAILS).format(**values),
            rng.choice(_CLOSINGS),
        ]
        body = " ".join(p for p in parts if p)
        event = {
            "specversion": "1.0",
            "id": f"ticket-{seed}-{number}",
            "type": "ticket.created",
            "source": "helpdesk/eu",
            "time": f"{values['date']}T09:{number % 60:02d}:00Z",
            "data": {
                "ticket_id": f"T-{seed}-{number:06d}",
                "channel": rng.choice(["email", "chat", "web"]),
                "subject": rng.choice(_SUBJECTS[intent]),
                "body": body[0].upper() + body[1:],
                "customer": {"email": values["email"], "phone": values["phone"]},
            },
        }
        yield event, intent


@dataclasses.dataclass(frozen=True)
class KafkaMessage:
    """A sample event as a business system puts it on Kafka."""

    value: bytes
    headers: list[tuple[str, bytes]]


def as_kafka_message(event: dict[str, Any]) -> KafkaMessage:
    """A structured sample CloudEvent in Kafka binary content mode: JSON data as the value,
    the attributes as ``ce_*`` headers (what the demo, the benchmarks and the tests send)."""
    attributes = envelope.Envelope(
        id=event["id"],
        type=event["type"],
        source=event["source"],
        time=datetime.datetime.fromisoformat(event["time"]),
        datacontenttype="application/json",
    )
    return KafkaMessage(json.dumps(event["data"]).encode(), attributes.headers())


#: The PII values the generator plants, for tests that prove none survives redaction.
PLANTED_PII = (*_CARDS, *_IBANS, *_PHONES, "@example.com", "203.0.113.")
