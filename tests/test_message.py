from __future__ import annotations

import base64
import datetime as dt
import enum
import io
import json
import os
import pathlib
import typing as t

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from flask_poststack.config import Settings
from flask_poststack.errors import ConfigurationError
from flask_poststack.errors import InvalidEmailError
from flask_poststack.errors import RecipientNotAllowedError
from flask_poststack.message import Attachment
from flask_poststack.message import build_all
from flask_poststack.message import build_payload
from flask_poststack.message import MAX_ATTACHMENT_BYTES
from flask_poststack.message import MAX_RECIPIENTS
from flask_poststack.message import ORIGINAL_RECIPIENTS_HEADER
from flask_poststack.message import Payload

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

SETTINGS = Settings(default_from="Acme <noreply@acme.test>")


def build(**kwargs: t.Any) -> Payload:
    kwargs.setdefault("to", "ada@example.com")
    kwargs.setdefault("subject", "Hello")
    if not {"html", "text", "template", "template_id"} & kwargs.keys():
        kwargs["text"] = "Hi"
    return build_payload(kwargs.pop("settings", SETTINGS), kwargs)


def invalid(argument: str, **kwargs: t.Any) -> str:
    """Build, expect an InvalidEmailError naming ``argument``; return its text."""
    with pytest.raises(InvalidEmailError) as info:
        build(**kwargs)
    assert info.value.argument == argument
    assert str(info.value).startswith(f"Invalid value for {argument!r}: ")
    return str(info.value)


# Wire keys, lists and defaults


def test_minimal_payload() -> None:
    assert build() == {
        "from": "Acme <noreply@acme.test>",
        "to": ["ada@example.com"],
        "subject": "Hello",
        "text": "Hi",
    }


def test_from_is_sent_as_from() -> None:
    payload = build(from_="Ada <ada@example.com>")
    assert payload["from"] == "Ada <ada@example.com>"
    assert "from_" not in payload


def test_single_addresses_become_lists() -> None:
    payload = build(to="a@example.com", cc="c@example.com", bcc=("b@example.com",))
    assert payload["to"] == ["a@example.com"]
    assert payload["cc"] == ["c@example.com"]
    assert payload["bcc"] == ["b@example.com"]


def test_display_names_are_kept_as_written() -> None:
    to = ["Ada Lovelace <ada@example.com>", '"Lovelace, Ada" <ada@example.com>']
    assert build(to=to)["to"] == to


ROUTING = [
    "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-From", "Resent-Sender",
    "Sender", "Return-Path", "Delivered-To", "Envelope-To", "Content-Type",
    "Content-Transfer-Encoding", "Content-Disposition", "MIME-Version",
    "DKIM-Signature", "Message-ID",
]  # fmt: skip


@pytest.mark.parametrize("name", [*ROUTING, "resent-to", "MESSAGE-ID"])
def test_routing_headers_are_refused(name: str) -> None:
    message = invalid("headers", headers={name: "x@example.com"})
    assert f"{name!r} cannot be set in headers" in message


@pytest.mark.parametrize("name", ["Resent-To", "Resent-Bcc", "Sender"])
def test_routing_headers_cannot_bypass_the_redirect(name: str) -> None:
    settings = Settings(default_from="a@acme.test", redirect_to="qa@acme.test")
    invalid("headers", settings=settings, headers={name: "boss@example.com"})


def test_other_headers_pass() -> None:
    headers = {
        "List-Unsubscribe": "<https://example.com/u>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "news <news.example.com>",
        "In-Reply-To": "<a@example.com>",
        "References": "<a@example.com>",
        "X-Campaign": "spring",
        "Content-Language": "en",
    }
    assert build(headers=headers)["headers"] == headers


# The sandbox answers 422 for these, so a queued job would fail for good.
REFUSED_NAMES = [
    '"A<b>" <ada@example.com>',
    '"Ada \\"Q\\" L" <ada@example.com>',
    '"A\\B" <ada@example.com>',
    "Lovelace, Ada <ada@example.com>",
    '"Ada <ada@example.com>',
]


@pytest.mark.parametrize("argument", ["to", "from_", "cc", "bcc", "reply_to"])
@pytest.mark.parametrize("value", REFUSED_NAMES)
def test_display_names_the_api_refuses_are_refused(argument: str, value: str) -> None:
    assert "display name" in invalid(argument, **{argument: value})


def test_display_names_the_api_accepts() -> None:
    to = ["Ünï Çödé <ada@example.com>", "A. Lovelace <ada@example.com>", "<a@b.org>"]
    assert build(to=to)["to"] == to


def test_addresses_are_stripped() -> None:
    assert build(to="  ada@example.com ")["to"] == ["ada@example.com"]


def test_defaults_from_settings() -> None:
    settings = Settings(
        default_from="noreply@acme.test",
        default_reply_to="help@acme.test",
        default_tags=("transactional",),
    )
    payload = build(settings=settings, tags=["welcome", "transactional"])
    assert payload["from"] == "noreply@acme.test"
    assert payload["reply_to"] == "help@acme.test"
    assert payload["tags"] == ["transactional", "welcome"]


def test_arguments_override_defaults() -> None:
    settings = Settings(default_from="a@acme.test", default_reply_to="b@acme.test")
    payload = build(settings=settings, from_="c@acme.test", reply_to="d@acme.test")
    assert (payload["from"], payload["reply_to"]) == ("c@acme.test", "d@acme.test")


def test_single_tag_string() -> None:
    assert build(tags="welcome")["tags"] == ["welcome"]


def test_every_field_reaches_the_payload() -> None:
    payload = build(
        cc=["c@example.com"],
        bcc=["b@example.com"],
        reply_to="r@example.com",
        html="<p>Hi</p>",
        text="Hi",
        headers={"X-Campaign": "spring"},
        tags=["a"],
        attachments=[Attachment("a.txt", b"a")],
        scheduled_at="2026-03-25T09:00:00Z",
        idempotency_key="order_123_welcome",
    )
    assert set(payload) == {
        "from", "to", "cc", "bcc", "reply_to", "subject", "html", "text",
        "headers", "tags", "attachments", "scheduled_at", "idempotency_key",
    }  # fmt: skip


def test_payload_is_plain_json_without_none() -> None:
    payload = build(
        to=("a@example.com",),
        attachments=[Attachment("a.bin", b"\x00\xff")],
        scheduled_at=dt.datetime(2026, 3, 25, 9, tzinfo=dt.timezone.utc),
        template_id="tpl_1",
        variables={"n": 1, "ok": True},
    )
    assert json.loads(json.dumps(payload)) == payload
    assert None not in payload.values()


def test_unset_fields_are_omitted() -> None:
    payload = build(cc=[], tags=[], headers={}, attachments=[], html="", text="Hi")
    assert not {"cc", "tags", "headers", "attachments", "html"} & payload.keys()


# Addresses


@pytest.mark.parametrize("argument", ["to", "cc", "bcc", "from_", "reply_to"])
def test_invalid_address_names_the_argument(argument: str) -> None:
    assert "not a valid email address" in invalid(argument, **{argument: "nope"})


def test_comma_separated_string_gets_a_hint() -> None:
    assert "as a list" in invalid("to", to="a@example.com, b@example.com")


def test_no_recipient() -> None:
    assert "no recipient" in invalid("to", to=None)


def test_to_is_required_even_with_cc() -> None:
    invalid("to", to=[], cc="c@example.com")


def test_too_many_recipients() -> None:
    many = [f"u{i}@example.com" for i in range(MAX_RECIPIENTS + 1)]
    invalid("bcc", bcc=many)
    assert len(build(to=many[:-1])["to"]) == MAX_RECIPIENTS


def test_no_sender_says_to_set_the_default() -> None:
    message = invalid("from_", settings=Settings())
    assert "POSTSTACK_DEFAULT_FROM" in message


def test_reply_to_takes_one_address() -> None:
    invalid("reply_to", reply_to=["a@example.com"])


@pytest.mark.parametrize(
    "address", ["ada@example.com\r\nBcc: x@evil.test", "Ada\n <ada@example.com>"]
)
def test_line_break_in_address_is_refused(address: str) -> None:
    assert "CR, LF" in invalid("to", to=address)


# Subject, body, headers, tags


def test_line_break_in_subject_is_refused() -> None:
    assert "CR, LF" in invalid("subject", subject="Hi\r\nBcc: x@evil.test")


def test_subject_is_required() -> None:
    invalid("subject", subject=None)


def test_a_body_is_required() -> None:
    assert "no body" in invalid("html", text=None, html="")


def test_template_id_supplies_subject_and_body() -> None:
    payload = build(subject=None, template_id="tpl_1", variables={"name": "Ada"})
    assert payload["template_id"] == "tpl_1"
    assert payload["variables"] == {"name": "Ada"}
    assert "subject" not in payload


def test_template_and_template_id_exclude_each_other() -> None:
    invalid("template", template="emails/welcome", template_id="tpl_1")


def test_context_needs_template() -> None:
    invalid("context", context={"name": "Ada"})


def test_variables_need_template_id() -> None:
    invalid("variables", variables={"name": "Ada"})


@pytest.mark.parametrize(
    "variables", [["name"], {1: "x"}, {"x": None}, {"x": [1]}, {"x": float("nan")}]
)
def test_variables_are_string_keys_to_scalars(variables: t.Any) -> None:
    invalid("variables", template_id="tpl_1", variables=variables)


class Plan(str, enum.Enum):
    PRO = "pro"


class Seats(int, enum.Enum):
    TEN = 10


def test_variables_go_on_the_wire_as_strings() -> None:
    variables = {"name": "Ada", "n": 3, "ok": True, "no": False, "p": 1.5,
                 "plan": Plan.PRO, "seats": Seats.TEN}  # fmt: skip
    payload = build(subject=None, template_id="tpl_1", variables=variables)
    assert payload["variables"] == {
        "name": "Ada", "n": "3", "ok": "true", "no": "false", "p": "1.5",
        "plan": "pro", "seats": "10",
    }  # fmt: skip


def test_headers_are_passed_through() -> None:
    headers = {"X-Entity-Ref-ID": "42", "List-Unsubscribe": "<mailto:u@acme.test>"}
    assert build(headers=headers)["headers"] == headers


@pytest.mark.parametrize(
    "headers",
    [
        ["X-A"],
        {"X-A": "1\r\nBcc: x@evil.test"},
        {"X-A\r\nBcc": "x"},
        {"X A": "x"},
        {"X:A": "x"},
        {"": "x"},
        {"X-A": 1},
    ],
)
def test_bad_headers(headers: t.Any) -> None:
    invalid("headers", headers=headers)


@pytest.mark.parametrize("name", ["To", "subject", "REPLY-TO", "From"])
def test_headers_with_their_own_argument_are_refused(name: str) -> None:
    assert "argument instead" in invalid("headers", headers={name: "x"})


@pytest.mark.parametrize("tags", [123, [""], ["a\nb"], [1]])
def test_bad_tags(tags: t.Any) -> None:
    invalid("tags", tags=tags)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("to", 123), ("subject", 1), ("html", b"x"), ("cc", b"a@example.com")],
)
def test_wrong_types_are_invalid_email_errors(argument: str, value: object) -> None:
    invalid(argument, **{argument: value})


# Attachments


def decoded(payload: Payload, index: int = 0) -> bytes:
    return base64.b64decode(payload["attachments"][index]["content"])


def test_attachment_round_trips() -> None:
    content = bytes(range(256))
    payload = build(attachments=[Attachment("data.bin", content)])
    assert decoded(payload) == content
    assert payload["attachments"][0]["content_type"] == "application/octet-stream"


def test_attachment_mapping_with_text_content() -> None:
    payload = build(attachments=[{"filename": "note.txt", "content": "héllo"}])
    assert decoded(payload) == "héllo".encode()
    assert payload["attachments"][0]["content_type"] == "text/plain"


def test_attachment_content_type_is_guessed_or_kept() -> None:
    payload = build(
        attachments=[
            Attachment("invoice.pdf", b"%PDF"),
            Attachment("data", b"x", content_type="application/json"),
        ]
    )
    types = [a["content_type"] for a in payload["attachments"]]
    assert types == ["application/pdf", "application/json"]


def test_attachment_from_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.csv"
    path.write_bytes(b"a,b\n1,2\n")
    payload = build(attachments=[path, str(path)])
    assert [a["filename"] for a in payload["attachments"]] == ["report.csv"] * 2
    assert decoded(payload, 1) == b"a,b\n1,2\n"


def test_attachment_missing_path() -> None:
    assert "cannot read" in invalid("attachments", attachments=["/no/such/file"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
@pytest.mark.timeout(10)
def test_attachment_fifo_is_refused_without_blocking(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    for path in (fifo, str(fifo)):
        message = invalid("attachments", attachments=[path])
        assert str(fifo) in message and "not a regular file" in message


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.timeout(10)
def test_attachment_device_is_refused() -> None:
    message = invalid("attachments", attachments=["/dev/zero"])
    assert "'/dev/zero'" in message and "not a regular file" in message


def test_attachment_directory_is_refused(tmp_path: pathlib.Path) -> None:
    message = invalid("attachments", attachments=[tmp_path])
    assert "a directory, not a regular file" in message


def test_attachment_from_binary_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "logo.png"
    path.write_bytes(b"\x89PNG")
    with path.open("rb") as f:
        payload = build(attachments=[f])
    assert payload["attachments"][0]["filename"] == "logo.png"
    assert payload["attachments"][0]["content_type"] == "image/png"
    assert decoded(payload) == b"\x89PNG"


def test_attachment_from_text_file_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("hi")
    with path.open() as f:
        assert "binary mode" in invalid("attachments", attachments=[f])


def test_attachment_file_object_needs_a_name() -> None:
    invalid("attachments", attachments=[io.BytesIO(b"x")])


def test_inline_image_with_content_id() -> None:
    payload = build(
        html='<img src="cid:logo">',
        attachments=[Attachment("logo.png", b"\x89PNG", content_id="logo")],
    )
    assert payload["attachments"][0]["content_id"] == "logo"


@pytest.mark.parametrize(
    "attachment",
    [
        Attachment("", b"x"),
        Attachment("../etc/passwd", b"x"),
        Attachment("a\r\n.txt", b"x"),
        Attachment("a.png", b"x", content_id="<logo>"),
        Attachment("a.png", b"x", content_type="png"),
        {"filename": "a.txt"},
        {"filename": "a.txt", "content": b"x", "mimetype": "text/plain"},
        {"filename": "a.txt", "content": 1},
        123,
    ],
)
def test_bad_attachments(attachment: t.Any) -> None:
    invalid("attachments", attachments=[attachment])


def test_attachments_must_be_a_list() -> None:
    invalid("attachments", attachments=Attachment("a.txt", b"x"))


def test_attachment_too_large() -> None:
    big = Attachment("big.bin", bytes(MAX_ATTACHMENT_BYTES + 1))
    assert "10 MB" in invalid("attachments", attachments=[big])
    assert build(attachments=[Attachment("ok.bin", bytes(MAX_ATTACHMENT_BYTES))])


def test_attachments_too_large_in_total() -> None:
    three = [Attachment(f"{i}.bin", bytes(9 * 1024 * 1024)) for i in range(3)]
    assert "25 MB" in invalid("attachments", attachments=three)


def test_attachment_path_too_large(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        f.truncate(MAX_ATTACHMENT_BYTES + 1)
    assert "10 MB" in invalid("attachments", attachments=[path])


# Templates


@pytest.fixture
def app(make_app: AppFactory, tmp_path: pathlib.Path) -> Flask:
    emails = tmp_path / "emails"
    emails.mkdir()
    (emails / "welcome.html").write_text("<p>Hi {{ name }} from {{ site }}</p>")
    (emails / "welcome.txt").write_text("Hi {{ name }}")
    (emails / "welcome.subject.txt").write_text("  Welcome,\n  {{ name }}!\n")
    (emails / "textonly.txt").write_text("Just text")
    (emails / "broken.txt").write_text("{{ 1 // 0 }}")
    # Templates only: build_payload renders them without the extension.
    app = make_app(register=False, template_folder=str(tmp_path))
    app.context_processor(lambda: {"site": "Acme"})
    return app


def test_template_renders_html_text_and_subject(app: Flask) -> None:
    with app.app_context():
        payload = build(
            subject=None, template="emails/welcome", context={"name": "Ada"}
        )
    assert payload["html"] == "<p>Hi Ada from Acme</p>"
    assert payload["text"] == "Hi Ada"
    assert payload["subject"] == "Welcome, Ada!"


def test_template_escapes_html_only(app: Flask) -> None:
    with app.app_context():
        payload = build(template="emails/welcome", context={"name": "<script>"})
    assert "&lt;script&gt;" in payload["html"]
    assert payload["text"] == "Hi <script>"


def test_template_inside_a_request(app: Flask) -> None:
    with app.test_request_context("/signup"):
        payload = build(template="emails/welcome", context={"name": "Ada"})
    assert payload["text"] == "Hi Ada"


def test_explicit_arguments_win_over_templates(app: Flask) -> None:
    with app.app_context():
        payload = build(
            subject="Custom", text="Plain", template="emails/welcome", context={}
        )
    assert (payload["subject"], payload["text"]) == ("Custom", "Plain")
    assert payload["html"] == "<p>Hi  from Acme</p>"


def test_template_without_subject_needs_one(app: Flask) -> None:
    with app.app_context():
        assert "textonly.subject.txt" in invalid(
            "subject", subject=None, template="emails/textonly"
        )
        assert build(template="emails/textonly")["text"] == "Just text"


def test_missing_template(app: Flask) -> None:
    with app.app_context():
        assert "emails/nope.html" in invalid("template", template="emails/nope")


def test_template_name_with_suffix_gets_a_hint(app: Flask) -> None:
    with app.app_context():
        assert "'emails/welcome'" in invalid("template", template="emails/welcome.html")


def test_template_error_propagates(app: Flask) -> None:
    with app.app_context(), pytest.raises(ZeroDivisionError):
        build(template="emails/broken")


def test_template_context_needs_string_keys(app: Flask) -> None:
    with app.app_context():
        invalid("context", template="emails/welcome", context={1: "x"})


# Scheduling


def test_scheduled_at_aware_datetime() -> None:
    when = dt.datetime(2026, 3, 25, 9, 0, 0, 123456, tzinfo=dt.timezone.utc)
    assert build(scheduled_at=when)["scheduled_at"] == "2026-03-25T09:00:00.123Z"


@pytest.mark.parametrize(
    "value",
    ["2026-03-25T09:00:00Z", "2026-03-25T10:00:00+01:00", "2026-03-25T04:00:00-05:00"],
)
def test_scheduled_at_strings_become_utc(value: str) -> None:
    assert build(scheduled_at=value)["scheduled_at"] == "2026-03-25T09:00:00.000Z"


# The parser is our own, not datetime.fromisoformat(), so these hold on every
# supported Python.
@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("2026-03-25t09:00:00z", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25 09:00:00+00:00", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T09:00:00-00:00", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T09:00Z", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T10:00+01:00", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T10:00:00+0100", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T03:30:00-0530", "2026-03-25T09:00:00.000Z"),
        ("2026-03-25T09:00:00.1Z", "2026-03-25T09:00:00.100Z"),
        ("2026-03-25T09:00:00.12+00:00", "2026-03-25T09:00:00.120Z"),
        ("2026-03-25T09:00:00,5Z", "2026-03-25T09:00:00.500Z"),
        ("2026-03-25T09:00:00.123456Z", "2026-03-25T09:00:00.123Z"),
        ("2026-03-25T09:00:00.1239Z", "2026-03-25T09:00:00.123Z"),
        ("2026-03-25T23:59:59.99999999999Z", "2026-03-25T23:59:59.999Z"),
        ("2026-03-25T00:30:00+01:00", "2026-03-24T23:30:00.000Z"),
        ("2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00.000Z"),
        ("2028-02-29T12:00:00Z", "2028-02-29T12:00:00.000Z"),
        (" 2026-03-25T09:00:00Z\n", "2026-03-25T09:00:00.000Z"),
    ],
)
def test_scheduled_at_accepted_strings(value: str, wire: str) -> None:
    assert build(scheduled_at=value)["scheduled_at"] == wire


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-25",
        "2026-03-25T09Z",
        "2026-03-25T0900Z",
        "20260325T090000Z",
        "2026-W13-3T09:00:00Z",
        "2026-084T09:00:00Z",
        "2026-3-25T09:00:00Z",
        "2026-03-25_09:00:00Z",
        "2026-03-25T09:00:00 Z",
        "2026-03-25T09:00:00+01",
        "2026-03-25T09:00:00+1:00",
        "2026-03-25T09:00:00+01:00:30",
        "2026-03-25T09:00:00+00:00Z",
        "2026-03-25T09:00:00 UTC",
        "2026-03-25T09:00:00.Z",
        "2026-03-25T09:00.5Z",
        "\u0662\u0660\u0662\u0666-03-25T09:00:00Z",
    ],
)
def test_scheduled_at_refuses_other_forms(value: str) -> None:
    assert "is not an ISO-8601 date and time" in invalid(
        "scheduled_at", scheduled_at=value
    )


@pytest.mark.parametrize(
    "value",
    ["2026-03-25 09:00", "2026-03-25t09:00:00.5"],
)
def test_scheduled_at_strings_need_an_offset(value: str) -> None:
    assert "has no timezone" in invalid("scheduled_at", scheduled_at=value)


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-01T09:00:00Z",
        "2026-00-01T09:00:00Z",
        "2026-02-29T09:00:00Z",
        "2026-04-31T09:00:00Z",
        "2026-03-25T24:00:00Z",
        "2026-03-25T09:60:00Z",
        "2026-03-25T23:59:60Z",
        "2026-03-25T09:00:00+24:00",
        "2026-03-25T09:00:00-9900",
        "2026-03-25T09:00:00+01:60",
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "9999-12-31T23:30:00-01:00",
    ],
)
def test_scheduled_at_out_of_range(value: str) -> None:
    assert "is out of range" in invalid("scheduled_at", scheduled_at=value)


@hyp_settings(max_examples=200, deadline=None)
@given(
    when=st.datetimes(
        min_value=dt.datetime(2, 1, 1),
        max_value=dt.datetime(9998, 12, 31),
        timezones=st.builds(
            dt.timezone,
            st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(
                lambda m: dt.timedelta(minutes=m)
            ),
        ),
    ),
    sep=st.sampled_from(["T", " "]),
)
def test_scheduled_at_isoformat_round_trips(when: dt.datetime, sep: str) -> None:
    expected = build(scheduled_at=when)["scheduled_at"]
    assert build(scheduled_at=when.isoformat(sep))["scheduled_at"] == expected


# Idempotency keys


def test_idempotency_key() -> None:
    assert build(idempotency_key="order_123")["idempotency_key"] == "order_123"


@pytest.mark.parametrize("key", ["", "a b", "a\nb", "x" * 256, "ключ", 5])
def test_bad_idempotency_key(key: object) -> None:
    invalid("idempotency_key", idempotency_key=key)


# Staging safety


def test_redirect_to_replaces_every_recipient() -> None:
    settings = Settings(default_from="a@acme.test", redirect_to="qa@acme.test")
    payload = build(
        settings=settings,
        to=["Ada <ada@example.com>", "b@example.com"],
        cc="c@example.com",
        bcc="d@example.com",
        headers={"X-Other": "1"},
    )
    assert payload["to"] == ["qa@acme.test"]
    assert "cc" not in payload
    assert "bcc" not in payload
    assert payload["headers"] == {
        "X-Other": "1",
        ORIGINAL_RECIPIENTS_HEADER: (
            "to=ada@example.com, b@example.com; cc=c@example.com; bcc=d@example.com"
        ),
    }


def test_bad_redirect_to_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="POSTSTACK_REDIRECT_TO"):
        build(settings=Settings(default_from="a@acme.test", redirect_to="nope"))


def test_allowed_recipients_pass() -> None:
    settings = Settings(
        default_from="a@acme.test",
        allowed_recipients=("*@example.com", "qa+*@acme.test"),
    )
    payload = build(settings=settings, to="ADA@Example.com", cc="qa+1@acme.test")
    assert payload["cc"] == ["qa+1@acme.test"]


def test_allowed_recipients_refuse() -> None:
    settings = Settings(default_from="a@acme.test", allowed_recipients=("*@acme.test",))
    with pytest.raises(RecipientNotAllowedError) as info:
        build(settings=settings, to="qa@acme.test", bcc="ada@example.com")
    assert info.value.argument == "bcc"
    assert "'ada@example.com'" in str(info.value)


def test_allowed_recipients_apply_after_redirect() -> None:
    settings = Settings(
        default_from="a@acme.test",
        redirect_to="qa@acme.test",
        allowed_recipients=("qa@acme.test",),
    )
    assert build(settings=settings, to="ada@example.com")["to"] == ["qa@acme.test"]


# Anything in, a payload or an InvalidEmailError out

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)
_junk = _json | st.lists(st.text(max_size=30), max_size=3)
_offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59),
    max_value=dt.timedelta(hours=23, minutes=59),
)
_printable = st.characters(exclude_categories=["C"])
_valid_arguments = st.fixed_dictionaries(
    {
        "to": st.sampled_from(["ada@example.com", ["Ada <a@example.com>", "b@x.org"]]),
        "subject": st.text(_printable, min_size=1, max_size=30),
        "text": st.text(min_size=1, max_size=30),
    },
    optional={
        "cc": st.just(["c@example.com"]),
        "html": st.text(max_size=30),
        "headers": st.dictionaries(
            st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True), st.text(max_size=8)
        ),
        "tags": st.lists(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), max_size=3),
        "attachments": st.lists(
            st.builds(Attachment, st.text(max_size=8), st.binary(max_size=8)),
            max_size=2,
        ),
        "scheduled_at": st.datetimes(timezones=st.builds(dt.timezone, _offsets))
        | st.text(max_size=30),
        "idempotency_key": st.text(max_size=20),
    },
)
_ARGUMENTS = [
    *("to", "cc", "bcc", "from_", "reply_to", "subject", "html", "text"),
    *("headers", "tags", "attachments", "template", "context", "template_id"),
    *("variables", "scheduled_at", "idempotency_key"),
]
_APP = Flask(__name__)


@hyp_settings(max_examples=200, deadline=None)
@given(
    arguments=_valid_arguments,
    junk=st.dictionaries(st.sampled_from(_ARGUMENTS), _junk, max_size=2),
)
def test_any_input_gives_a_payload_or_invalid_email_error(
    arguments: dict[str, t.Any], junk: dict[str, t.Any]
) -> None:
    try:
        with _APP.app_context():
            payload = build_payload(SETTINGS, {**arguments, **junk})
    except InvalidEmailError:
        return
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert None not in payload.values()


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("body", "text"),
        ("recipients", "to"),
        ("sender", "from_"),
        ("subjcet", "subject"),
    ],
)
def test_an_unknown_argument_is_named_with_the_closest_one(
    name: str, hint: str
) -> None:
    with pytest.raises(InvalidEmailError) as info:
        build(to="ada@example.com", subject="s", text="t", **{name: "x"})
    assert info.value.argument == name
    assert f"Did you mean {hint!r}?" in str(info.value)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("headers", {"X-Evil\n": "v"}),
        ("idempotency_key", "key\n"),
        ("template_id", "tpl_x\n"),
    ],
)
def test_a_trailing_newline_is_refused(argument: str, value: t.Any) -> None:
    message = invalid(argument, to="ada@example.com", subject="s", text="t",
                      **{argument: value})  # fmt: skip
    assert argument in str(message)


def test_a_non_string_argument_name_is_an_invalid_email_error() -> None:
    with pytest.raises(InvalidEmailError) as info:
        build_all(
            SETTINGS, [{"to": "a@example.com", "subject": "s", "text": "t", 1: 2}]
        )
    assert info.value.argument == "messages[0].1"


def test_an_unknown_argument_is_also_a_type_error() -> None:
    with pytest.raises(TypeError, match="'body' is not an email argument"):
        build(to="ada@example.com", subject="s", body="t")
