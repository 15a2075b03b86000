"""The inbox pages, the admin API, the Python API and the CLI."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
from html.parser import HTMLParser

import httpx
import markupsafe
import pytest
from poststack import PostStack

from flask_poststack.sandbox import Sandbox

from .conftest import message
from .conftest import TEST_KEY

EVIL = '<h1>Hi</h1><script>alert("owned")</script><img src=x onerror="alert(1)">'


def iframes(page: str) -> list[dict[str, str | None]]:
    found: list[dict[str, str | None]] = []

    class Parser(HTMLParser):
        def handle_starttag(
            self, tag: str, attrs: list[tuple[str, str | None]]
        ) -> None:
            if tag == "iframe":
                found.append(dict(attrs))

    Parser().feed(page)
    return found


def test_inbox_lists_newest_first(sandbox: Sandbox, client: PostStack) -> None:
    client.emails.send(message(subject="First <b>bold</b>"))
    client.emails.send(message(subject="Second"))
    with httpx.Client(base_url=sandbox.base_url) as browser:
        page = browser.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    # Only the inbox's own script file: no inline script, nothing remote.
    directives = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'" and "http" not in csp
    text = page.text
    assert text.index("Second") < text.index("First")
    assert "First &lt;b&gt;bold&lt;/b&gt;" in text


def test_email_page_sandboxes_the_html(sandbox: Sandbox, client: PostStack) -> None:
    content = base64.b64encode(b"col1,col2\n").decode()
    sent = client.emails.send(
        message(
            html=EVIL,
            text="Plain <text>",
            headers={"X-Trace": "abc"},
            attachments=[{"filename": "r.csv", "content": content}],
        )
    )
    sandbox.wait_for_status(sent["id"])
    with httpx.Client(base_url=sandbox.base_url) as browser:
        page = browser.get(f"/inbox/{sent['id']}")
        assert page.status_code == 200
        body = page.text
        assert "<script>" not in body and 'onerror="alert' not in body
        frames = iframes(body)
        assert len(frames) == 1
        # The browser unescapes the attribute: the frame gets the exact HTML,
        # with the sandbox attribute present and empty (no allow-scripts).
        assert frames[0] == {"sandbox": None, "srcdoc": EVIL, "title": "HTML body"}
        tab = f"/inbox/{sent['id']}?tab="
        assert "Plain &lt;text&gt;" in browser.get(tab + "text").text
        headers = browser.get(tab + "headers").text
        assert "X-Trace" in headers and "abc" in headers
        events = browser.get(tab + "events").text
        assert "delivered" in events and "queued" in events
        link = f"/inbox/{sent['id']}/attachments/0"
        assert link in browser.get(tab + "attachments").text
        download = browser.get(link)
        assert download.content == b"col1,col2\n"
        # No stored type: a download, never sniffed, never run.
        assert download.headers["content-type"] == "application/octet-stream"
        assert "attachment" in download.headers["content-disposition"]
        assert download.headers["x-content-type-options"] == "nosniff"
        assert browser.get("/inbox/em_nope").status_code == 404


def test_admin_api(sandbox: Sandbox, client: PostStack) -> None:
    content = base64.b64encode(b"\x00\x01").decode()
    sent = client.emails.send(
        message(attachments=[{"filename": "a.bin", "content": content}])
    )
    with httpx.Client(base_url=sandbox.base_url) as admin:
        assert admin.get("/_sandbox/health").json()["ok"] is True
        stats = admin.get("/_sandbox/stats").json()
        assert stats["emails_created"] == 1 and stats["requests"] == 1
        emails = admin.get("/_sandbox/emails").json()["emails"]
        assert emails[0]["publicId"] == sent["id"]
        assert emails[0]["attachments"] == [
            {"filename": "a.bin", "contentType": None, "contentId": None, "size": 2}
        ]
        one = admin.get(f"/_sandbox/emails/{sent['id']}").json()["email"]
        assert one["htmlBody"] == "<p>Hi</p>"
        raw = admin.get(f"/_sandbox/emails/{sent['id']}/attachments/0")
        assert raw.content == b"\x00\x01"
        requests = admin.get("/_sandbox/requests").json()["requests"]
        assert requests[0]["path"] == "/emails" and requests[0]["status"] == 202
        assert TEST_KEY not in str(requests)
        config = admin.post(
            "/_sandbox/config", json={"latency": 0.01, "throttle_rate": 5}
        )
        assert config.json()["latency"] == 0.01 and sandbox.config.throttle_rate == 5.0
        bad = admin.post("/_sandbox/config", json={"nope": 1})
        assert (
            bad.status_code == 400 and "unknown sandbox setting" in bad.json()["error"]
        )
        assert admin.post("/_sandbox/config", json={"latency": "x"}).status_code == 400
        outcome = admin.post(
            "/_sandbox/outcomes", json={"outcome": "bounced", "pattern": "*@b.test"}
        )
        assert outcome.status_code == 201
        assert (
            admin.get("/_sandbox/outcomes").json()["outcomes"][0]["outcome"]
            == "bounced"
        )
        assert admin.get("/_sandbox/deliveries").json() == {"deliveries": []}
        assert admin.post("/_sandbox/reset", json={}).json() == {"success": True}
        assert admin.get("/_sandbox/stats").json()["emails_created"] == 0
        assert admin.get("/_sandbox/nope").status_code == 404
    restored = sandbox.config.as_dict()
    assert restored["latency"] == 0.0 and restored["throttle_rate"] is None
    assert sandbox.outcomes.rules == [] and sandbox.emails == []


def test_admin_stats_can_leave_out_per_key_attempts(
    sandbox: Sandbox, client: PostStack
) -> None:
    with httpx.Client(base_url=sandbox.base_url) as admin:
        config = admin.post(
            "/_sandbox/config", json={"idempotency_attempts_max_keys": 1}
        )
        assert config.json()["idempotency_attempts_max_keys"] == 1
        client.emails.send(message())
        client.emails.send(message())
        full = admin.get("/_sandbox/stats").json()
        assert list(full["attempts_by_idempotency_key"].values()) == [1]
        assert full["idempotency_key_attempts"] == 2
        assert full["attempt_keys_evicted"] == 1
        assert admin.get("/_sandbox/stats?keys=1").json() == full
        assert admin.get("/_sandbox/stats?keys=true").json() == full
        summary = admin.get("/_sandbox/stats", params={"keys": "0"}).json()
        assert "attempts_by_idempotency_key" not in summary
        del full["attempts_by_idempotency_key"]
        assert summary == full
        assert admin.get("/_sandbox/stats?keys=False").json() == summary
        bad = admin.get("/_sandbox/stats?keys=maybe")
        assert bad.status_code == 400 and "'keys'" in bad.json()["error"]
        bad = admin.post("/_sandbox/config", json={"idempotency_attempts_max_keys": -1})
        assert bad.status_code == 400


def test_admin_routes_skip_faults_and_auth(sandbox: Sandbox) -> None:
    sandbox.faults.add("error", status=503)
    sandbox.configure(latency=0.5)
    with httpx.Client(base_url=sandbox.base_url, timeout=0.4) as admin:
        assert admin.get("/_sandbox/stats").status_code == 200
        assert admin.get("/").status_code == 200


def test_missing_authorization_header(sandbox: Sandbox) -> None:
    with httpx.Client(base_url=sandbox.base_url) as raw:
        response = raw.post("/emails", json=message())
        empty = raw.post(
            "/emails/em_x/cancel",
            headers={
                "Content-Type": "application/json",
                "Authorization": "Bearer sk_live_a",
            },
        )
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid API key", "code": "unauthorized"}
    assert response.headers["x-request-id"].startswith("req_")
    assert empty.status_code == 404  # an empty JSON-typed body is fine


def test_python_api(sandbox: Sandbox) -> None:
    assert sandbox.base_url.startswith("http://127.0.0.1:")
    assert repr(sandbox).endswith("running>")
    with pytest.raises(ValueError, match="unknown sandbox setting"):
        sandbox.configure(nope=1)
    with pytest.raises(ValueError):
        sandbox.configure(idempotency_precedence="never")
    with pytest.raises(KeyError):
        sandbox.get_email("em_missing")
    with pytest.raises(ValueError):
        sandbox.faults.add("error", status=200)
    with (
        Sandbox(latency=0.0) as other,
        PostStack(TEST_KEY, base_url=other.base_url) as c,
    ):
        sent = c.emails.send(message())
        assert other.emails[0].id == sent["id"]
        assert sandbox.emails == []
    assert repr(other).endswith("stopped>")


def _default_sigint() -> None:
    """Ctrl-C as in a terminal: a test process (or a library in it) may
    ignore or block SIGINT, and a child inherits both."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_cli_serves_until_interrupted(tmp_path: object) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_poststack.sandbox", "--port", "0", "--quiet"],
        preexec_fn=_default_sigint,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("PostStack sandbox on http://127.0.0.1:")
        base_url = first.split(" on ")[1].strip()
        with PostStack(TEST_KEY, base_url=base_url) as client:
            assert client.emails.send(message())["id"].startswith("em_")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _out, err = process.communicate(timeout=60)
        finally:
            process.kill()  # only if it did not stop: its pipes closed either way
            process.communicate()
    assert process.returncode == 0, err


def test_admin_filters_latest_and_delete(sandbox: Sandbox, client: PostStack) -> None:
    first = client.emails.send(message(to=["ann@a.test"], subject="One", tags=["x"]))
    client.emails.send(message(to=["ann@a.test"], subject="Two"))
    client.emails.send(message(to=["ben@b.test"], subject="Three"))
    with httpx.Client(base_url=sandbox.base_url) as admin:
        found = admin.get("/_sandbox/emails", params={"to": "ANN@"}).json()["emails"]
        assert [e["subject"] for e in found] == ["One", "Two"]  # oldest first
        latest = admin.get("/_sandbox/emails/latest", params={"to": "ann@a.test"})
        assert latest.json()["email"]["subject"] == "Two"
        tagged = admin.get("/_sandbox/emails/latest", params={"tag": "x"})
        assert tagged.json()["email"]["publicId"] == first["id"]
        none = admin.get("/_sandbox/emails/latest", params={"subject": "nope"})
        assert none.status_code == 404
        json_type = {"Content-Type": "application/json"}
        # A cross-origin form post cannot delete: no JSON content type.
        assert admin.delete(f"/_sandbox/emails/{first['id']}").status_code == 403
        one = admin.delete(f"/_sandbox/emails/{first['id']}", headers=json_type)
        assert one.json() == {"deleted": 1}
        again = admin.delete(f"/_sandbox/emails/{first['id']}", headers=json_type)
        assert again.status_code == 404
        assert admin.delete("/_sandbox/emails", headers=json_type).json() == {
            "deleted": 2
        }
    assert sandbox.emails == []


@pytest.mark.parametrize(
    ("stored", "served", "disposition", "sandboxed"),
    [
        ("image/png", "image/png", "inline", True),
        ("application/pdf", "application/pdf", "inline", False),
        ("image/svg+xml", "image/svg+xml", "attachment", True),
        ("text/html", "text/html", "attachment", True),
        ("bad\r\nX-Evil: 1", "application/octet-stream", "attachment", True),
    ],
)
def test_attachments_keep_their_type_safely(
    sandbox: Sandbox,
    client: PostStack,
    stored: str,
    served: str,
    disposition: str,
    sandboxed: bool,
) -> None:
    content = base64.b64encode(b"<svg onload=alert(1)>").decode()
    attachment = {"filename": 'a"b.x', "content": content, "content_type": stored}
    sent = client.emails.send(message(attachments=[attachment]))
    with httpx.Client(base_url=sandbox.base_url) as browser:
        answer = browser.get(f"/inbox/{sent['id']}/attachments/0")
        download = browser.get(f"/inbox/{sent['id']}/attachments/0?download=1")
    assert answer.headers["content-type"] == served
    assert answer.headers["content-disposition"] == f'{disposition}; filename="ab.x"'
    assert answer.headers["x-content-type-options"] == "nosniff"
    csp = answer.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'") and csp.endswith("sandbox") is sandboxed
    assert download.headers["content-disposition"].startswith("attachment;")


def test_events_show_their_data_and_other_emails_hooks_do_not_show(
    sandbox: Sandbox, live_client: PostStack
) -> None:
    sandbox.outcomes.add("bounced", "*@b.test", times=None)
    bounced = live_client.emails.send(message(to=["x@b.test"]))
    other = live_client.emails.send(message())
    sandbox.wait_for_status(bounced["id"])
    with httpx.Client(base_url=sandbox.base_url) as browser:
        events = browser.get(f"/inbox/{bounced['id']}?tab=events").text
        hooks = browser.get(f"/inbox/{other['id']}?tab=webhooks").text
    # A table of the event's data, not a Python repr.
    assert "<th>recipient</th><td>x@b.test</td>" in events
    assert "{&#39;recipient&#39;" not in events
    assert "No webhook deliveries for this email" in hooks


def test_highlighted_source_only_adds_spans_to_escaped_text() -> None:
    from flask_poststack.sandbox.inbox import highlight_html

    source = "<p title=\"a>b\" onclick='x()'>1 < 2 &amp;</p><!-- <b> --><script>"
    html = str(highlight_html(source))
    # Take the spans out again: what is left is exactly the escaped source.
    bare = re.sub(r'<span class="hl-[tvc]">|</span>', "", html)
    assert bare == str(markupsafe.escape(source))
    assert '<span class="hl-c">&lt;!-- &lt;b&gt; --&gt;</span>' in html
    assert "<script>" not in html and "<p" not in html


@pytest.mark.parametrize(
    ("name", "fallback", "encoded"),
    [
        ("отчёт.txt", "file.txt", "%D0%BE%D1%82%D1%87%D1%91%D1%82.txt"),
        ("café.pdf", "cafe.pdf", "caf%C3%A9.pdf"),
        ("plain.txt", "plain.txt", None),
    ],
)
def test_attachment_names_outside_latin_1_are_served(
    sandbox: Sandbox,
    client: PostStack,
    name: str,
    fallback: str,
    encoded: str | None,
) -> None:
    content = base64.b64encode(b"hello").decode()
    attachment = {"filename": name, "content": content, "content_type": "text/plain"}
    sent = client.emails.send(message(attachments=[attachment]))
    with httpx.Client(base_url=sandbox.base_url) as browser:
        page = browser.get(f"/inbox/{sent['id']}/attachments/0")
        admin = browser.get(f"/_sandbox/emails/{sent['id']}/attachments/0")
    for answer in (page, admin):
        assert answer.status_code == 200 and answer.content == b"hello"
        header = answer.headers["content-disposition"]
        assert f'; filename="{fallback}"' in header
        star = f"; filename*=UTF-8''{encoded}" if encoded else "filename*"
        assert (star in header) is bool(encoded)
