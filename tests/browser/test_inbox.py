"""The sandbox inbox in a real browser: list, search, live update, every tab
of the email view, an inline ``cid:`` image, an attachment preview, delete
and clear."""

from __future__ import annotations

import base64
import json
import typing as t

import pytest
from playwright.sync_api import expect
from playwright.sync_api import Page
from poststack import PostStack

from flask_poststack.sandbox import Sandbox

from ..sandbox.conftest import message
from ..sandbox.conftest import Receiver
from ..sandbox.conftest import TEST_KEY
from .conftest import png

# Waits on the image's load, inside the page: 0 when it is broken.
NATURAL_WIDTH = """img => img.complete ? img.naturalWidth : new Promise(done => {
    img.addEventListener("load", () => done(img.naturalWidth));
    img.addEventListener("error", () => done(0));
})"""


@pytest.fixture
def client(sandbox: Sandbox) -> t.Iterator[PostStack]:
    with PostStack(TEST_KEY, base_url=sandbox.base_url) as client:
        yield client


@pytest.fixture
def receiver() -> t.Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


def rich_email() -> dict[str, t.Any]:
    image = base64.b64encode(png()).decode()
    return message(
        to=["carol@example.com"],
        subject="Your receipt",
        html='<h1>Receipt</h1><img alt="logo" src="cid:logo@acme">'
        '<script>document.title = "owned"</script>',
        text="Receipt, as text",
        headers={"X-Trace-Id": "abc-123"},
        tags=["receipts"],
        attachments=[
            {
                "filename": "logo.png",
                "content": image,
                "content_type": "image/png",
                "content_id": "logo@acme",
            },
            {"filename": "photo.png", "content": image, "content_type": "image/png"},
        ],
    )


def test_list_search_and_live_update(
    page: Page, sandbox: Sandbox, client: PostStack
) -> None:
    client.emails.send(message(subject="Welcome aboard", tags=["signup"]))
    client.emails.send(rich_email())
    page.goto(sandbox.inbox_url)
    rows = page.locator("#rows tr[data-id]")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Your receipt")  # newest first

    page.get_by_label("Search").fill("welcome")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Welcome aboard")
    page.get_by_label("Search").fill("")
    page.get_by_label("Tag").fill("receipts")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Your receipt")

    page.goto(sandbox.inbox_url)
    page.evaluate("window.notReloaded = true")
    client.emails.send(message(subject="Arrived while looking"))
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("Arrived while looking")
    expect(page.locator("#count")).to_have_text("3")
    assert page.evaluate("window.notReloaded") is True


def test_email_tabs(
    page: Page, sandbox: Sandbox, client: PostStack, receiver: Receiver
) -> None:
    client.webhooks.create({"url": receiver.url, "events": ["email.delivered"]})
    sent = client.emails.send(rich_email())
    sandbox.wait_for_status(sent["id"])
    sandbox.wait_for(lambda: any(d["deliveredAt"] for d in sandbox.deliveries))
    page.goto(sandbox.inbox_url)
    page.get_by_role("link", name="Your receipt").click()
    expect(page.locator("h1")).to_have_text("Your receipt")

    frame = page.frame_locator("iframe[title='HTML body']")
    expect(frame.locator("h1")).to_have_text("Receipt")
    # The cid: image resolves from the email's own attachment and decodes.
    assert frame.locator("img").evaluate(NATURAL_WIDTH) == 3
    # The email's script did not run, neither in the frame nor here.
    assert page.title() != "owned"
    page.get_by_role("link", name="mobile (375px)").click()
    assert page.locator("iframe").evaluate("f => f.clientWidth") <= 375

    tabs = page.get_by_role("navigation", name="Email parts")
    panel = page.locator("#panel")
    tabs.get_by_role("link", name="Text").click()
    expect(panel).to_have_text("Receipt, as text")
    tabs.get_by_role("link", name="HTML source").click()
    expect(panel).to_contain_text('<img alt="logo" src="cid:logo@acme">')
    expect(panel.locator(".hl-t").first).to_have_text("<h1>")  # highlighted
    tabs.get_by_role("link", name="Headers").click()
    name = panel.locator("th", has_text="X-Trace-Id")
    # innerText applies CSS text-transform: the name must read as sent.
    assert name.inner_text() == "X-Trace-Id"
    expect(panel).to_contain_text("abc-123")
    tabs.get_by_role("link", name="Raw JSON").click()
    raw = json.loads(panel.locator("pre").inner_text())
    assert raw["publicId"] == sent["id"] and raw["headers"] == {"X-Trace-Id": "abc-123"}
    tabs.get_by_role("link", name="Attachments (2)").click()
    preview = panel.locator("img[alt='photo.png']")
    assert preview.evaluate(NATURAL_WIDTH) == 3
    tabs.get_by_role("link", name="Events").click()
    expect(panel.locator("tbody > tr")).to_have_count(3)
    expect(panel).to_contain_text("delivered")
    tabs.get_by_role("link", name="Webhooks").click()
    delivery = panel.locator("tbody > tr")
    expect(delivery).to_have_count(1)
    expect(delivery).to_contain_text("email.delivered")
    expect(delivery).to_contain_text("delivered (200)")


def test_delete_and_clear(page: Page, sandbox: Sandbox, client: PostStack) -> None:
    first = client.emails.send(message(subject="Delete me"))
    client.emails.send(message(subject="Keep me"))
    client.emails.send(message(subject="And me"))
    page.goto(f"{sandbox.inbox_url}inbox/{first['id']}")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(sandbox.inbox_url)
    rows = page.locator("#rows tr[data-id]")
    expect(rows).to_have_count(2)
    assert [e.subject for e in sandbox.emails] == ["Keep me", "And me"]

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Clear all").click()
    expect(page.locator("#rows")).to_contain_text("No emails yet")
    assert sandbox.emails == []


def test_a_pdf_attachment_opens_inline(
    page: Page, sandbox: Sandbox, client: PostStack
) -> None:
    from example_app.pdf import text_pdf

    pdf = base64.b64encode(text_pdf(["Hello PDF"])).decode()
    attachment = {
        "filename": "r.pdf",
        "content": pdf,
        "content_type": "application/pdf",
    }
    sent = client.emails.send(message(attachments=[attachment]))
    downloads: list[object] = []
    page.on("download", lambda download: downloads.append(download))
    with page.expect_response(lambda r: "/attachments/0" in r.url) as info:
        page.goto(f"{sandbox.inbox_url}inbox/{sent['id']}?tab=attachments")
    answer = info.value
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == 'inline; filename="r.pdf"'

    # Chromium's PDF viewer takes the frame: it is shown, not downloaded.
    def viewer(*_: object) -> bool:
        return any(f.url.startswith("chrome-extension:") for f in page.frames)

    if not viewer():
        page.wait_for_event("framenavigated", predicate=viewer)
    assert downloads == []
