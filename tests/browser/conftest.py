"""One headless Chromium (Debian's, installed by ``make chromium``) for the
tests of this package, driven by Playwright; a fresh page per test.

Package scope, not session: Playwright's sync API keeps an asyncio loop
running in this thread while it is open, which would break later tests
that call ``asyncio.run``.

There is no skip: without the browser these tests fail, naming the fix.
"""

from __future__ import annotations

import os
import struct
import typing as t
import zlib
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from playwright.sync_api import Page
from playwright.sync_api import sync_playwright

CHROMIUM = Path(os.environ.get("POSTSTACK_TEST_CHROMIUM", "/usr/bin/chromium"))


def launch(playwright: t.Any) -> Browser:
    """Debian's Chromium, headless; never a browser build of Playwright's."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run 'make chromium' (apt-get install"
            " chromium) or set POSTSTACK_TEST_CHROMIUM",
            pytrace=False,
        )
    browser: Browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=["--no-sandbox"]
    )
    return browser


@pytest.fixture(scope="package")
def browser() -> t.Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> t.Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    # Bounded waits: a broken page fails in seconds, not at pytest's timeout.
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG, a red rectangle (``naturalWidth`` is ``width`` once it
    decodes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
