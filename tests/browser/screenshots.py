"""Regenerate the inbox and preview screenshots in the docs.

``make screenshots`` (or ``python -m tests.browser.screenshots OUT_DIR``):
starts a sandbox and the example app on free ports, sends a few emails
through the real send path, and photographs the real pages with the same
headless Chromium the browser tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import typing as t
from pathlib import Path

from playwright.sync_api import Page
from playwright.sync_api import sync_playwright
from poststack import PostStack

from example_app import create_app
from example_app.demo import listen
from flask_poststack import send_email
from flask_poststack.sandbox import Sandbox

from .conftest import launch
from .conftest import png

# Live mode, so that the sandbox applies the bounce below.
API_KEY = "sk_live_screenshots"
RICH_HTML = """<div style="font-family: sans-serif; max-width: 36em; margin: auto">
<img src="cid:logo" alt="Acme" width="120" height="36">
<h1 style="color: #27364d">Your order has shipped</h1>
<p>Order <b>#1042</b> left our warehouse today and should arrive on Friday.</p>
<p><a href="https://example.com/track/1042"
  style="background: #27364d; color: #fff; padding: .5em 1em; text-decoration: none;
  border-radius: .3em">Track your parcel</a></p>
</div>"""


def send_samples(app: t.Any, sandbox: Sandbox) -> tuple[str, str]:
    """Four emails; returns the ids of the one with an inline image and of a
    bounce."""
    from example_app.previews import receipt
    from example_app.previews import welcome

    with app.app_context():
        send_email(**welcome())
        send_email(**receipt())
        sent = send_email(
            to="Ada Lovelace <ada@example.com>",
            subject="Your order has shipped",
            html=RICH_HTML,
            text="Order #1042 left our warehouse today.",
            tags=["shipping"],
            headers={"X-Order-Id": "1042"},
            attachments=[
                {
                    "filename": "logo.png",
                    "content": png(120, 36),
                    "content_type": "image/png",
                    "content_id": "logo",
                }
            ],
        )
        bounced = send_email(**welcome(), cc="bounce@example.com")
    sandbox.wait_for_status(sent.id)
    sandbox.wait_for_status(bounced.id)
    return sent.id, bounced.id


def shoot(page: Page, url: str, path: Path) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(path), full_page=False)
    print(f"wrote {path}")


def main(argv: t.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots")
    parser.add_argument("out", type=Path, help="e.g. docs/_static")
    out: Path = parser.parse_args(argv).out
    (out / "sandbox").mkdir(parents=True, exist_ok=True)
    (out / "previews").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        sandbox = stack.enter_context(Sandbox(lifecycle_delay=0.05))
        sandbox.outcomes.add("bounced", "bounce@example.com", times=None)
        # The app receives the sandbox's webhooks, as in `make demo`.
        server = listen(stack)
        app_url = f"http://127.0.0.1:{server.server_port}"
        with PostStack(API_KEY, base_url=sandbox.base_url) as client:
            hook = client.webhooks.create(
                {"url": app_url + "/poststack/webhooks", "events": ["*"]}
            )
        database = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "app.db"
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
                "POSTSTACK_API_KEY": API_KEY,
                "POSTSTACK_BASE_URL": sandbox.base_url,
                "POSTSTACK_DEFAULT_FROM": "Acme <hello@example.com>",
                "POSTSTACK_PREVIEWS": True,
                "POSTSTACK_WEBHOOK_SECRET": hook["signingSecret"],
            }
        )
        server.app = app
        email_id, bounced = send_samples(app, sandbox)
        sandbox.wait_for(lambda: len(sandbox.deliveries) >= 8)
        playwright = stack.enter_context(sync_playwright())
        browser = launch(playwright)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        inbox = sandbox.inbox_url
        shoot(page, inbox, out / "sandbox" / "inbox.png")
        shoot(page, f"{inbox}inbox/{email_id}", out / "sandbox" / "email-html.png")
        shoot(
            page,
            f"{inbox}inbox/{email_id}?tab=headers",
            out / "sandbox" / "email-headers.png",
        )
        shoot(
            page,
            f"{inbox}inbox/{bounced}?tab=events",
            out / "sandbox" / "email-events.png",
        )
        shoot(
            page,
            f"{inbox}inbox/{bounced}?tab=webhooks",
            out / "sandbox" / "email-webhooks.png",
        )
        previews = f"{app_url}/_poststack/previews"
        shoot(page, previews + "/", out / "previews" / "index.png")
        shoot(page, previews + "/welcome", out / "previews" / "preview.png")
        shoot(
            page,
            previews + "/welcome?width=mobile",
            out / "previews" / "preview-mobile.png",
        )


if __name__ == "__main__":
    main()
