"""The annotator view in a real browser: keyboard labelling, leases, agreement, escaping."""

from __future__ import annotations

import pathlib
import re

import httpx
from playwright import sync_api
from playwright.sync_api import expect

from tests.support import console
from tunewire.stack import embedded

CONFLICT = ("Refund for a late parcel", "I want a refund, the parcel was late again.")
ABSTAIN = ("A question", "Hello, how do I choose between your two models?")
ABSTAIN_2 = ("Another question", "Do you ship gift wrapping with the speaker?")


def shown(subject: str, body: str) -> str:
    """The task text label makes of a ticket (``{subject}\\n{body}``, whitespace collapsed)."""
    return f"{subject} {body}"


def annotate_url(stack: embedded.EmbeddedStack, objective: str) -> str:
    return f"{stack.service_urls['label']}/console/annotate?objective={objective}"


def current_task(page: sync_api.Page) -> str:
    """The id of the task on screen, once one is (empty when the queue is empty)."""
    shown = page.locator('[data-testid="task-text"]:visible, [data-testid="empty"]:visible')
    expect(shown).to_have_count(1)
    return page.get_by_test_id("task-text").get_attribute("data-task-id") or ""


def press_and_wait(page: sync_api.Page, key: str) -> str:
    """Press ``key`` on the task shown and wait for the next one (or the empty queue)."""
    before = current_task(page)
    assert before, "no task on screen"
    page.keyboard.press(key)
    expect(page.get_by_test_id("task-text")).not_to_have_attribute("data-task-id", before)
    return current_task(page)


def test_an_annotator_works_the_queue_by_keyboard(
    stack: embedded.EmbeddedStack,
    api: httpx.Client,
    label_api: httpx.Client,
    sign_in: console.SignIn,
) -> None:
    spec = console.objective_spec()
    assert api.post("/v1/objectives", json=spec).status_code == 201
    console.send_tickets(api, spec, [CONFLICT, ABSTAIN, ABSTAIN_2, CONFLICT[::-1]])
    console.queued(label_api, spec["name"], 4)

    page = sign_in(annotate_url(stack, spec["name"]), name="a1", clock=True)
    expect(page.get_by_test_id("who")).to_have_text("a1")
    expect(page.get_by_test_id("objective")).to_have_value(spec["name"])
    buttons = page.get_by_test_id("labels").get_by_role("button")
    expect(buttons).to_have_text(["1 refund", "2 shipping", "3 account", "4 warranty", "s skip"])
    page.evaluate("window.__samePage = true")  # gone if anything reloads the page

    # The lease is shown and renewed while the annotator works on the task.
    lease = page.get_by_test_id("lease")
    expect(lease).to_have_text(re.compile(r"lease: [45]:\d\d left"))
    first_expiry = lease.get_attribute("data-expires-at")
    with page.expect_response(lambda r: r.url.endswith("/renew")) as renewed:
        page.clock.fast_forward("03:00")
    assert renewed.value.status == 200
    expect(lease).not_to_have_attribute("data-expires-at", first_expiry or "")

    seen: dict[str, tuple[str, str]] = {}
    for key in ("1", "s", "2", "1"):
        task = current_task(page)
        seen[task] = (
            page.get_by_test_id("task-text").inner_text(),
            page.get_by_test_id("hints").inner_text(),
        )
        press_and_wait(page, key)
    expect(page.get_by_test_id("empty")).to_be_visible()

    texts = {text: hints for text, hints in seen.values()}
    assert set(texts) == {shown(*t) for t in (CONFLICT, ABSTAIN, ABSTAIN_2, CONFLICT[::-1])}
    conflict = texts[shown(*CONFLICT)]
    assert "rule votes refund" in conflict and "rule votes shipping" in conflict
    assert texts[shown(*ABSTAIN)] == "no rule voted"

    progress = page.get_by_test_id("counts")
    expect(progress).to_contain_text("your answers3")
    expect(page.get_by_test_id("annotators")).to_contain_text("a13")
    assert page.evaluate("window.__samePage") is True

    status = label_api.get(f"/v1/queue/{spec['name']}").json()
    assert status["annotators"] == {"a1": 3}
    assert status["counts"]["done"] == 3, "each answer resolved its task (one label per item)"


def test_a_second_annotator_disagreement_appears(
    stack: embedded.EmbeddedStack,
    api: httpx.Client,
    label_api: httpx.Client,
    sign_in: console.SignIn,
    screenshots: pathlib.Path,
) -> None:
    spec = console.objective_spec()
    spec["labelling"]["labels_per_item"] = 2
    assert api.post("/v1/objectives", json=spec).status_code == 201
    console.send_tickets(api, spec, [ABSTAIN, ABSTAIN_2, CONFLICT])
    console.queued(label_api, spec["name"], 3)

    first = sign_in(annotate_url(stack, spec["name"]), name="a1")
    for key in ("1", "1", "s"):  # refund, refund, skip the last (oldest first)
        press_and_wait(first, key)
    expect(first.get_by_test_id("empty")).to_be_visible()
    expect(first.get_by_test_id("agreement")).to_contain_text("items with 2+ answers0")

    second = sign_in(annotate_url(stack, spec["name"]), name="a2")
    for key in ("2", "2"):  # shipping twice: both items now disagree
        press_and_wait(second, key)
    agreement = second.get_by_test_id("agreement")
    expect(agreement).to_contain_text("items with 2+ answers2")
    expect(agreement).to_contain_text("percent agreement0.0%")
    expect(second.get_by_test_id("annotators")).to_contain_text("a12")
    expect(second.get_by_test_id("annotators")).to_contain_text("a22")
    assert current_task(second), "the item a1 skipped is still a2's to label"
    console.shot(second, screenshots / "annotator.png")

    # The first annotator's page shows the disagreement on its own (it refreshes).
    expect(first.get_by_test_id("agreement")).to_contain_text("percent agreement0.0%")
    status = label_api.get(f"/v1/queue/{spec['name']}").json()
    assert status["agreement"]["items"] == 2
    assert status["agreement"]["percent_agreement"] == 0.0
    assert status["counts"]["done"] == 0, "a tie resolves nothing"


def test_markup_in_an_event_is_shown_as_text(
    stack: embedded.EmbeddedStack,
    api: httpx.Client,
    label_api: httpx.Client,
    sign_in: console.SignIn,
) -> None:
    spec = console.objective_spec()
    assert api.post("/v1/objectives", json=spec).status_code == 201
    subject = "<script>window.__pwned = 'script'</script>"
    body = '<img src="x" onerror="window.__pwned = \'img\'"><b>bold</b> hello, anyone there?'
    console.send_tickets(api, spec, [(subject, body)])
    console.queued(label_api, spec["name"], 1)

    page = sign_in(annotate_url(stack, spec["name"]), name="a3")
    text = page.get_by_test_id("task-text")
    expect(text).to_have_text(shown(subject, body))
    assert text.locator("*").count() == 0, "the event's markup became elements"
    assert page.evaluate("window.__pwned") is None
    assert page.locator("script:not([src])").count() == 0


def test_a_wrong_token_is_refused_and_nothing_is_shown(
    stack: embedded.EmbeddedStack, sign_in: console.SignIn
) -> None:
    page = sign_in(f"{stack.service_urls['label']}/console/annotate", name="a1", token="nope")
    expect(page.get_by_test_id("notice")).to_contain_text("The token was refused")
    expect(page.get_by_test_id("signin")).to_be_visible()
    expect(page.locator(".app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('tunewire.token')") is None
