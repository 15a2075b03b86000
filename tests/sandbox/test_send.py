from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from poststack import AsyncPostStack
from poststack import PostStack
from poststack import PostStackError

from flask_poststack.sandbox import Sandbox

from .conftest import LIVE_KEY
from .conftest import message
from .conftest import TEST_KEY


def test_send_stores_the_row(sandbox: Sandbox, client: PostStack) -> None:
    result = client.emails.send(
        message(
            cc=["carol@example.com"],
            reply_to="help@example.com",
            headers={"X-Campaign": "welcome"},
            tags=["welcome"],
            text="Hi",
        )
    )
    assert result["id"].startswith("em_") and result["test_mode"] is True
    assert "replayed" not in result
    email = client.emails.get(result["id"])["email"]
    assert email["publicId"] == result["id"]
    assert isinstance(email["id"], int)
    assert email["fromAddress"] == "ada@example.com"
    assert email["fromName"] == "Ada"
    assert email["toAddresses"] == ["bob@example.com"]
    assert email["ccAddresses"] == ["carol@example.com"]
    assert email["replyTo"] == ["help@example.com"]
    assert email["headers"] == {"X-Campaign": "welcome"}
    assert email["tags"] == ["welcome"]
    assert email["htmlBody"] == "<p>Hi</p>" and email["textBody"] == "Hi"
    assert email["testMode"] is True
    assert email["events"][0]["eventType"] == "queued"
    assert sandbox.stats["emails_created"] == 1


def test_live_key_has_no_test_mode_flag(live_client: PostStack) -> None:
    result = live_client.emails.send(message())
    assert set(result) == {"id"}


def test_send_alias_route(sandbox: Sandbox, client: PostStack) -> None:
    result = client._client.post("/emails/send", message())
    assert sandbox.get_email(result["id"]).subject == "Hello"


def test_async_client(sandbox: Sandbox) -> None:
    async def run() -> tuple[dict[str, object], dict[str, object]]:
        async with AsyncPostStack(TEST_KEY, base_url=sandbox.base_url) as client:
            sent = await client.emails.send(message())
            got = await client.emails.get(sent["id"])
            return sent, got

    sent, got = asyncio.run(run())
    assert got["email"]["publicId"] == sent["id"]  # type: ignore[index]


@pytest.mark.parametrize("key", ["sk_live", "sk_other_x", "sk_test_", "pk_live_abc"])
def test_bad_api_key_is_401(sandbox: Sandbox, key: str) -> None:
    with (
        PostStack(key, base_url=sandbox.base_url) as client,
        pytest.raises(PostStackError) as info,
    ):
        client.emails.send(message())
    assert info.value.status_code == 401
    assert info.value.code == "unauthorized"
    assert info.value.error == "Invalid API key"
    assert sandbox.stats["emails_created"] == 0


def test_key_never_logged(sandbox: Sandbox, client: PostStack) -> None:
    client.emails.send(message())
    entry = sandbox.requests[-1]
    assert entry["key"] == "sk_test_\u2026"
    assert TEST_KEY not in repr(sandbox.requests)
    assert entry["user_agent"].startswith("PostStack-Python-SDK/0.9")


def test_request_id_on_every_response(sandbox: Sandbox, client: PostStack) -> None:
    with pytest.raises(PostStackError) as info:
        client.emails.get("em_missing")
    assert info.value.request_id and info.value.request_id.startswith("req_")
    assert info.value.status_code == 404 and info.value.code == "not_found"


ATTACHMENT = base64.b64encode(b"%PDF-1.4 \x00\xff binary").decode()
BIG = 10 * 1024 * 1024 + 1


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"from": None, "from_": "ada@example.com"}, 400, "named 'from'"),
        ({"from": None}, 400, "'from'"),
        ({"from": 5}, 400, "'from'"),
        ({"from": "not-an-address"}, 422, "Invalid email address"),
        ({"to": None}, 400, "'to'"),
        ({"to": []}, 400, "at least one"),
        ({"to": [1]}, 400, "'to'"),
        ({"to": ["nope"]}, 422, "Invalid email address"),
        ({"to": ['"A<b>" <ada@example.com>']}, 422, "display name"),
        ({"from": '"Ada \\"Q\\" L" <ada@example.com>'}, 422, "display name"),
        ({"from": '"A\\B" <ada@example.com>'}, 422, "display name"),
        ({"cc": ["Lovelace, Ada <ada@example.com>"]}, 422, "in double quotes"),
        ({"to": [f"u{i}@example.com" for i in range(51)]}, 422, "Too many recipients"),
        ({"cc": "carol@example.com"}, 400, "'cc'"),
        ({"subject": None}, 400, "'subject'"),
        ({"html": None}, 400, "'html', 'text' or 'template_id'"),
        ({"headers": {"X-A": 1}}, 400, "'headers'"),
        ({"tags": "welcome"}, 400, "'tags'"),
        ({"template_id": "tpl_1", "variables": {"n": 3}}, 400, "'variables'"),
        ({"scheduled_at": "tomorrow"}, 400, "ISO-8601"),
        ({"tracking": True}, 400, "'tracking'"),
        ({"tracking": {"opens": "no"}}, 400, "'tracking'"),
        ({"tracking": {"links": False}}, 400, "'tracking'"),
        ({"unsubscribe": "yes"}, 400, "'unsubscribe'"),
        ({"attachments": {"filename": "a"}}, 400, "'attachments'"),
        ({"attachments": [{"content": ATTACHMENT}]}, 400, "filename"),
        ({"attachments": [{"filename": "a", "content": "@@@"}]}, 400, "base64"),
        (
            {
                "attachments": [
                    {"filename": "a", "content": base64.b64encode(b"x" * BIG).decode()}
                ]
            },
            422,
            "larger than 10 MB",
        ),
        (
            {
                "attachments": [
                    {
                        "filename": f"{i}",
                        "content": base64.b64encode(b"x" * 9_000_000).decode(),
                    }
                    for i in range(3)
                ]
            },
            422,
            "25 MB in total",
        ),
    ],
)
def test_validation_errors(
    sandbox: Sandbox,
    client: PostStack,
    body: dict[str, object],
    status: int,
    fragment: str,
) -> None:
    payload = {k: v for k, v in message(**body).items() if v is not None}
    with pytest.raises(PostStackError) as info:
        client.emails.send(payload)
    assert info.value.status_code == status
    assert info.value.code == (
        "invalid_request" if status == 400 else "unprocessable_entity"
    )
    assert fragment in info.value.error
    assert sandbox.emails == []


def test_non_json_body_is_400(sandbox: Sandbox) -> None:
    with PostStack(TEST_KEY, base_url=sandbox.base_url) as client:
        response = client._client._httpx.post("/emails", content=b"{nope")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_valid_variants(sandbox: Sandbox, client: PostStack) -> None:
    bare = client.emails.send(message(to="solo@example.com"))
    assert sandbox.get_email(bare["id"]).to == ["solo@example.com"]
    templated = client.emails.send(
        {"from": "a@example.com", "to": ["b@example.com"], "template_id": "tpl_1"}
    )
    assert sandbox.get_email(templated["id"]).subject is None
    attached = client.emails.send(
        message(
            attachments=[
                {
                    "filename": "r.pdf",
                    "content": ATTACHMENT,
                    "content_type": "application/pdf",
                }
            ]
        )
    )
    stored = sandbox.get_email(attached["id"]).attachments[0]
    assert stored.content == b"%PDF-1.4 \x00\xff binary"
    assert stored.content_type == "application/pdf"


def test_tracking_and_unsubscribe_are_stored(
    sandbox: Sandbox, client: PostStack
) -> None:
    sent = client.emails.send(message(tracking={"clicks": False}, unsubscribe=True))
    email = sandbox.get_email(sent["id"])
    assert email.input.tracking == {"clicks": False}
    assert email.row()["unsubscribeEnabled"] is True
    both = client.emails.send(message(tracking={"opens": True, "clicks": False}))
    plain = sandbox.get_email(client.emails.send(message())["id"])
    assert plain.input.tracking is None
    assert plain.row()["unsubscribeEnabled"] is False
    with httpx.Client(base_url=sandbox.base_url) as browser:
        page = browser.get(f"/inbox/{sent['id']}").text
        assert "opens on, clicks off" in browser.get(f"/inbox/{both['id']}").text
        assert "domain default" in browser.get(f"/inbox/{plain.id}").text
    assert "opens domain default, clicks off" in page
    assert "(default)" not in page
    assert "one-click List-Unsubscribe header" in page


def test_bare_to_can_be_refused(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(accept_bare_to=False, recipient_cap=2)
    with pytest.raises(PostStackError) as info:
        client.emails.send(message(to="solo@example.com"))
    assert info.value.status_code == 400
    with pytest.raises(PostStackError) as info:
        client.emails.send(message(to=["a@x.com", "b@x.com", "c@x.com"]))
    assert info.value.status_code == 422


def test_batch(sandbox: Sandbox, client: PostStack) -> None:
    result = client.emails.batch(
        {"emails": [message(), message(to=["bad"]), message(subject="Two")]}
    )
    data = result["data"]
    assert len(data) == 3
    assert data[0]["id"].startswith("em_") and data[2]["id"].startswith("em_")
    assert data[1]["code"] == "unprocessable_entity" and "error" in data[1]
    assert sandbox.get_email(data[2]["id"]).subject == "Two"
    assert sandbox.stats["emails_created"] == 2


def test_batch_limits(sandbox: Sandbox, client: PostStack) -> None:
    with pytest.raises(PostStackError) as info:
        client.emails.batch({"emails": [message()] * 101})
    assert info.value.status_code == 422
    assert info.value.error == "Batch size exceeds limit"
    with pytest.raises(PostStackError) as info:
        client.emails.batch({"emails": []})
    assert info.value.status_code == 422
    with pytest.raises(PostStackError) as info:
        client.emails.batch({"email": []})
    assert info.value.status_code == 400
    assert len(client.emails.batch({"emails": [message()] * 100})["data"]) == 100


def test_get_unknown_and_numeric_ids_404(client: PostStack) -> None:
    sent = client.emails.send(message())
    number = client.emails.get(sent["id"])["email"]["id"]
    for bad in (str(number), "em_nope", sent["id"] + "/x"):
        with pytest.raises(PostStackError) as info:
            client.emails.get(bad)
        assert info.value.status_code == 404


def test_list_filters_and_pages(sandbox: Sandbox, client: PostStack) -> None:
    sandbox.configure(lifecycle_delay=30)  # keep them queued for status=
    client.emails.send(
        message(to=["Zed@Example.com"], subject="Invoice 1", tags=["bill"])
    )
    client.emails.send(message(subject="welcome aboard"))
    client.emails.send(message(**{"from": "ops@corp.example"}, subject="Alert"))
    listing = client.emails.list()
    assert [r["subject"] for r in listing["data"]] == [
        "Alert",
        "welcome aboard",
        "Invoice 1",
    ]
    assert listing["meta"] == {"page": 1, "perPage": 20, "total": 3, "totalPages": 1}
    assert "htmlBody" not in listing["data"][0]

    def subjects(**params: object) -> list[str]:
        return [r["subject"] for r in client.emails.list(params)["data"]]

    assert subjects(to="zed@") == ["Invoice 1"]
    assert subjects(subject="WELCOME") == ["welcome aboard"]
    assert subjects(**{"from": "CORP"}) == ["Alert"]
    assert subjects(tag="bill") == ["Invoice 1"]
    assert subjects(status="queued") == ["Alert", "welcome aboard", "Invoice 1"]
    assert subjects(status="bounced") == []
    # Exact matches on what the sandbox never records: no email has them.
    for name in ("domain_id", "provider", "country", "device"):
        assert subjects(**{name: "x"}) == []
        assert len(subjects(**{name: ""})) == 3  # a blank filter is no filter
    page = client.emails.list({"page": 2, "per_page": 2})
    assert [r["subject"] for r in page["data"]] == ["Invoice 1"]
    assert page["meta"] == {"page": 2, "perPage": 2, "total": 3, "totalPages": 2}


def test_json_content_type_on_bodiless_requests(
    sandbox: Sandbox, client: PostStack
) -> None:
    sent = client.emails.send(message(scheduled_at="2099-01-01T00:00:00Z"))
    # The SDK sends Content-Type: application/json and no body on all of these.
    assert client.emails.get_events(sent["id"])["events"][0]["eventType"] == "queued"
    assert client.emails.get_insights(sent["id"]) == {"warnings": []}
    assert client.emails.cancel(sent["id"]) == {"success": True}


def test_unknown_route_and_method(client: PostStack) -> None:
    with pytest.raises(PostStackError) as info:
        client._client.get("/domains")
    assert info.value.status_code == 404
    with pytest.raises(PostStackError) as info:
        client._client.delete("/emails")
    assert info.value.status_code == 405


def test_live_and_test_keys_counted(sandbox: Sandbox) -> None:
    with PostStack(LIVE_KEY, base_url=sandbox.base_url) as client:
        client.emails.send(message())
    assert sandbox.emails[0].test_mode is False


def test_rejections_after_validation(sandbox: Sandbox, live_client: PostStack) -> None:
    sandbox.configure(
        unverified_domains=["unverified.example"],
        suppressed_recipients=["*@blocked.example"],
    )
    with pytest.raises(PostStackError) as info:
        live_client.emails.send(message(**{"from": "x@unverified.example"}))
    assert (info.value.status_code, info.value.error) == (
        422,
        "Domain not verified: unverified.example",
    )
    result = live_client.emails.batch(
        {"emails": [message(), message(bcc=["Eve <eve@Blocked.example>"])]}
    )
    assert "id" in result["data"][0]
    assert result["data"][1] == {
        "error": "Recipient is suppressed: eve@blocked.example",
        "code": "unprocessable_entity",
    }
    assert len(sandbox.emails) == 1


def test_list_has_the_docs_aliases(sandbox: Sandbox, client: PostStack) -> None:
    for subject in ("One", "Two", "Three"):
        client.emails.send(message(subject=subject))
    listing = client.emails.list({"page": 2, "per_page": 2})
    assert listing["emails"] == listing["data"]
    assert [r["subject"] for r in listing["emails"]] == ["One"]
    assert listing["pagination"] == {
        "total": 3,
        "page": 2,
        "per_page": 2,
        "total_pages": 2,
    }
    assert listing["meta"] == {"page": 2, "perPage": 2, "total": 3, "totalPages": 2}
