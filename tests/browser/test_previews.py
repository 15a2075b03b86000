"""The preview pages in a real browser: the index, one preview with its
frame, inline image, undefined-variable error and width toggle, and "send to
the sandbox" landing in the inbox."""

from __future__ import annotations

import threading
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from playwright.sync_api import expect
from playwright.sync_api import Page
from werkzeug.serving import make_server

from flask_poststack import Attachment
from flask_poststack import PostStack
from flask_poststack.sandbox import Sandbox

from ..conftest import AppFactory
from ..conftest import TEST_KEY
from .conftest import png
from .test_inbox import NATURAL_WIDTH


def serve(app: Flask) -> t.Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def preview_app(make_app: AppFactory, tmp_path: Path, sandbox: Sandbox) -> Flask:
    folder = tmp_path / "templates" / "emails"
    folder.mkdir(parents=True)
    (folder / "order.subject.txt").write_text("Order {{ number }} shipped")
    (folder / "order.html").write_text(
        '<h1>Order {{ number }}</h1><img alt="logo" src="cid:logo">'
        "<p>Tracking: {{ tracking_code }}</p>"
    )
    (folder / "order.txt").write_text("Order {{ number }} shipped.")
    app = make_app(
        template_folder=tmp_path / "templates",
        register=False,
        TESTING=False,
        DEBUG=True,
        POSTSTACK_API_KEY=TEST_KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
    )
    poststack = PostStack()

    @poststack.preview
    def order_shipped() -> dict[str, t.Any]:
        return {
            "to": "ada@example.com",
            "template": "emails/order",
            "context": {"number": 1042},
            "attachments": [Attachment("logo.png", png(), content_id="logo")],
        }

    @poststack.preview
    def plain_notice() -> dict[str, t.Any]:
        return {"to": "ben@example.com", "subject": "Notice", "text": "Hello"}

    poststack.init_app(app)
    return app


@pytest.fixture
def app_url(make_app: AppFactory, tmp_path: Path, sandbox: Sandbox) -> t.Iterator[str]:
    yield from serve(preview_app(make_app, tmp_path, sandbox))


def test_previews_index_and_one_preview(
    page: Page, app_url: str, sandbox: Sandbox
) -> None:
    page.goto(app_url + "/_poststack/previews/")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Order 1042 shipped")
    expect(rows.first).to_contain_text("undefined variables")

    page.get_by_role("link", name="order_shipped").click()
    expect(page.locator("h1")).to_have_text("order_shipped")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("emails/order.html")
    expect(alert).to_contain_text("tracking_code")
    expect(page.locator("#summary")).to_contain_text("ada@example.com")
    expect(page.locator("#text")).to_have_text("Order 1042 shipped.")
    expect(page.locator("#spam")).to_contain_text("no action")
    frame = page.frame_locator("iframe[title='HTML body']")
    expect(frame.locator("h1")).to_have_text("Order 1042")
    assert frame.locator("img").evaluate(NATURAL_WIDTH) == 3
    page.get_by_role("link", name="mobile (375px)").click()
    assert page.locator("iframe").evaluate("f => f.clientWidth") <= 375

    page.get_by_role("button", name="Send to the sandbox").click()
    page.get_by_role("link", name="em_").click()
    # The sandbox's inbox shows what the preview showed.
    expect(page.locator("h1")).to_have_text("Order 1042 shipped")
    inbox_frame = page.frame_locator("iframe[title='HTML body']")
    assert inbox_frame.locator("img").evaluate(NATURAL_WIDTH) == 3
    (email,) = sandbox.emails
    assert email.subject == "Order 1042 shipped"
