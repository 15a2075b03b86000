"""flask_poststack.flask_mail: Flask-Mail's API, sent through the one pipeline."""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import typing as t

import pytest
from flask import Flask
from flask import g

from flask_poststack import get_state
from flask_poststack import InvalidEmailError
from flask_poststack import send_email
from flask_poststack import signals
from flask_poststack.flask_mail import Attachment
from flask_poststack.flask_mail import BadHeaderError
from flask_poststack.flask_mail import email_args
from flask_poststack.flask_mail import email_dispatched
from flask_poststack.flask_mail import IncompleteMessageError
from flask_poststack.flask_mail import Mail
from flask_poststack.flask_mail import Message
from flask_poststack.flask_mail import sanitize_address
from flask_poststack.sandbox import Sandbox
from flask_poststack.testing import RecordedEmail

if t.TYPE_CHECKING:
    from flask_poststack.pytest_plugin import FakeQueue

KEY = "sk_test_flaskmail0123456789"
SENDER = "Acme <hello@acme.test>"


def flask_mail_app(**config: t.Any) -> Flask:
    """An app configured the Flask-Mail way: Mail(app), MAIL_* settings."""
    app = Flask(__name__)
    app.config.update(TESTING=True, MAIL_DEFAULT_SENDER=SENDER, MAIL_SERVER="smtp")
    app.config.update(config)
    return app


@pytest.fixture
def app() -> t.Iterator[Flask]:
    app = flask_mail_app()
    with app.app_context():
        yield app


@pytest.fixture
def mail(app: Flask) -> Mail:
    return Mail(app)


def mime(message: Message) -> email.message.Message:
    return email.message_from_bytes(message.as_bytes())


# Setting up -----------------------------------------------------------------


def test_mail_registers_poststack_and_maps_the_settings(app: Flask, mail: Mail) -> None:
    state = get_state(app)
    assert state.settings.default_from == SENDER
    assert app.extensions["mail"] is mail.state
    assert mail.default_sender == SENDER  # Flask-Mail reads settings through it
    again = mail.init_mail(app.config, app.debug, app.testing)
    assert vars(again) == vars(mail.state)
    # send_email, the gradual path, gets the same default sender.
    send_email(to="ada@example.com", subject="s", text="t")
    assert state.outbox[-1]["from"] == SENDER


def test_an_explicit_poststack_key_wins_over_its_mail_key() -> None:
    app = flask_mail_app(POSTSTACK_DEFAULT_FROM="ops@acme.test")
    Mail(app)
    assert get_state(app).settings.default_from == "ops@acme.test"
    assert app.extensions["mail"].default_sender == SENDER


def test_a_mail_without_an_app_needs_init_app() -> None:
    mail = Mail()
    app = flask_mail_app()
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        mail.connect()
    mail.init_app(app)
    with app.app_context(), mail.record_messages() as outbox:
        mail.send_message("Hi", recipients=["ada@example.com"], body="b")
    assert [m.subject for m in outbox] == ["Hi"]


# Message --------------------------------------------------------------------


def test_a_message_built_outside_the_app_gets_the_default_sender_at_send() -> None:
    msg = Message("s", recipients=["a@example.com"], body="b")
    assert msg.sender is None
    app = flask_mail_app()
    mail = Mail(app)
    with mail.record_messages() as outbox:
        mail.send(msg)  # Mail(app): no app context needed
    assert outbox == [msg] and msg.sender == SENDER


def test_message_fields(app: Flask, mail: Mail) -> None:
    msg = Message("s", mail_options=["SMTPUTF8"], rcpt_options=["NOTIFY=NEVER"])
    assert (msg.sender, msg.recipients, msg.cc, msg.bcc) == (SENDER, [], [], [])
    assert (msg.mail_options, msg.rcpt_options) == (["SMTPUTF8"], ["NOTIFY=NEVER"])
    msg.add_recipient("ada@example.com")
    msg.cc, msg.bcc = ["ada@example.com", "cc@example.com"], ["bcc@example.com"]
    assert msg.send_to == {"ada@example.com", "cc@example.com", "bcc@example.com"}
    assert Message("s", sender=("Ops", "ops@acme.test")).sender == "Ops <ops@acme.test>"
    mail.state.default_sender = ("Team", "team@acme.test")  # type: ignore[union-attr]
    assert Message("s").sender == "Team <team@acme.test>"
    msg.html = "<p>x</p>"
    assert msg.alts == {"html": "<p>x</p>"}
    msg.html = None
    assert msg.alts == {}


@pytest.mark.parametrize(
    ("subject", "bad"),
    [
        ("ok", False),
        ("line one\r\n line two\r\n\tthree", False),
        ("broken\n", True),
        ("broken\r\nnot folded", True),
        ("folded\r\n ", True),
        ("folded\r\n\r\n more", True),
    ],
)
def test_has_bad_headers_allows_only_folded_subjects(
    app: Flask, mail: Mail, subject: str, bad: bool
) -> None:
    assert Message(subject, recipients=["a@example.com"]).has_bad_headers() is bad


def test_bad_addresses_are_bad_headers(app: Flask, mail: Mail) -> None:
    for fields in (
        {"sender": "a@example.com\r\n"},
        {"reply_to": "a@example.com\n"},
        {"recipients": ["ok@example.com", "a\r@example.com"]},
    ):
        kwargs: dict[str, t.Any] = {"recipients": ["ok@example.com"], **fields}
        assert Message("s", **kwargs).has_bad_headers()


_EVIL = "\r\nBcc: evil@x.test"


def _with_attachment(**fields: t.Any) -> Message:
    msg = Message("s", recipients=["a@example.com"], body="b")
    msg.attach(**{"filename": "a.txt", "data": b"x", **fields})
    return msg


@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: Message("Hi\nBcc: evil@x.test"), "subject"),
        (lambda: Message("Hi\r\n\r\n x"), "subject"),  # ends the header block
        (lambda: Message("s", extra_headers={"X-A": "v" + _EVIL}), "headers"),
        (lambda: _with_attachment(content_type="text/plain" + _EVIL), "attachments"),
        (
            lambda: _with_attachment(headers={"Content-ID": "<a>" + _EVIL}),
            "attachments",
        ),
    ],
)
def test_rendering_refuses_header_injection(
    app: Flask, mail: Mail, build: t.Callable[[], Message], argument: str
) -> None:
    msg = build()
    msg.recipients = ["a@example.com"]
    for render in (msg.as_string, msg.as_bytes, msg.__str__):
        with pytest.raises(BadHeaderError) as info:
            render()
        assert info.value.argument == argument


def test_rendering_refuses_the_extra_headers_sending_refuses(
    app: Flask, mail: Mail
) -> None:
    for name in ("To", "bcc", "Content-Type"):
        msg = Message("s", recipients=["a@example.com"], extra_headers={name: "x"})
        with pytest.raises(InvalidEmailError) as info:
            msg.as_string()
        assert info.value.argument == "headers"
        with pytest.raises(InvalidEmailError):
            mail.send(msg)


# Rendering ------------------------------------------------------------------


def test_a_plain_message_renders_as_text(app: Flask, mail: Mail) -> None:
    msg = Message(
        "Hello",
        recipients=["ada@example.com", "Bob <bob@example.com>"],
        body="Hi Ada",
        cc=["cc@example.com"],
        bcc=["secret@example.com"],
        reply_to="Support <help@acme.test>",
        extra_headers={"X-Order": "42"},
        date=0.0,
    )
    parsed = mime(msg)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_payload() == "Hi Ada"
    assert parsed["To"] == "ada@example.com, Bob <bob@example.com>"
    assert parsed["Cc"] == "cc@example.com"
    assert "secret@example.com" not in msg.as_string()
    assert parsed["Reply-To"] == "Support <help@acme.test>"
    assert parsed["X-Order"] == "42"
    assert parsed["Message-ID"] == msg.msgId
    assert msg.msgId.startswith("<") and "@" in msg.msgId
    assert email.utils.parsedate_to_datetime(parsed["Date"]).timestamp() == 0
    assert str(msg) == msg.as_string()
    assert bytes(msg) == msg.as_bytes()


def test_html_and_attachments_nest_as_mail_clients_expect(
    app: Flask, mail: Mail
) -> None:
    msg = Message("s", recipients=["a@example.com"], body="text", html="<p>html</p>")
    assert mime(msg).get_content_type() == "multipart/alternative"
    msg.attach("report.csv", "text/csv", b"a,b\n")
    msg.attach("ünïcode ✓.txt", data="text data")
    parsed = mime(msg)
    assert parsed.get_content_type() == "multipart/mixed"
    body, csv, text = t.cast(list[email.message.Message], parsed.get_payload())
    plain, html = t.cast(list[email.message.Message], body.get_payload())
    assert (plain.get_payload(), html.get_payload()) == ("text", "<p>html</p>")
    assert csv.get_filename() == "report.csv"
    assert csv.get_payload(decode=True) == b"a,b\n"
    assert text.get_filename() == "ünïcode ✓.txt"
    assert text.get_content_type() == "text/plain"


def test_ascii_attachments_setting(app: Flask, mail: Mail) -> None:
    mail.state.ascii_attachments = True  # type: ignore[union-attr]
    msg = Message("s", recipients=["a@example.com"], body="b")
    msg.attach("Prüfung  ☂ é.txt", data=b"x")
    assert mime(msg).get_payload(1).get_filename() == "Prufung e.txt"  # type: ignore[union-attr]
    assert email_args(msg)["attachments"][0].filename == "Prufung e.txt"  # type: ignore[index, union-attr]


def test_non_ascii_headers_are_encoded_in_the_charset(app: Flask, mail: Mail) -> None:
    msg = Message(
        "Grüße",
        sender=("Zoë", "zoe@acme.test"),
        recipients=["Ådne <adne@example.com>"],
        body="ünïcode",
    )
    text = msg.as_string()
    assert "Subject: =?utf-8?" in text
    assert "From: =?utf-8?" in text
    assert sanitize_address("Ådne <adne@example.com>") in text
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert (parsed["Subject"], parsed["From"]) == ("Grüße", "Zoë <zoe@acme.test>")
    assert parsed.get_content() == "ünïcode"
    japanese = Message("表題", sender=("送信者", "a@acme.test"), charset="shift_jis")
    japanese.body = "内容"
    text = japanese.as_string()
    assert "Subject: =?iso-2022-jp?" in text and "From: =?iso-2022-jp?" in text
    assert 'charset="iso-2022-jp"' in text
    # A body the charset cannot hold falls back to UTF-8.
    ascii_only = Message("s", body="✓", charset="us-ascii")
    assert 'charset="utf-8"' in ascii_only.as_string()


def test_a_utf8_local_part_renders_with_smtputf8(
    app: Flask, mail: Mail, poststack_outbox: list[RecordedEmail]
) -> None:
    msg = Message(
        "Grüße",
        sender=("Zoë", "zoë@acme.test"),
        recipients=["jörg@example.com"],
        cc=[("Jörg, J", "jörg@bücher.example")],
        body="b",
        extra_headers={"X-Note": "ünï"},
    )
    mail.send(msg)  # sending accepts it, so rendering must too
    assert poststack_outbox[0].to == ["jörg@example.com"]
    raw = msg.as_bytes()
    assert "jörg@example.com".encode() in raw
    assert msg.as_string().encode("utf-8") == raw
    # The bytes parser reads headers as ASCII: parse the text (RFC 6532).
    parsed = email.message_from_string(raw.decode(), policy=email.policy.default)
    assert parsed["To"].addresses[0].username == "jörg"
    assert str(parsed["From"]) == "Zoë <zoë@acme.test>"
    assert str(parsed["Cc"]) == '"Jörg, J" <jörg@xn--bcher-kva.example>'
    assert (parsed["Subject"], parsed["X-Note"]) == ("Grüße", "ünï")
    # Without a UTF-8 address the headers stay ASCII (RFC 2047).
    msg.recipients, msg.cc, msg.sender = ["ada@example.com"], [], "a@acme.test"
    assert msg.as_bytes().isascii()


def test_sanitize_address_drops_line_breaks_and_encodes_idn() -> None:
    assert sanitize_address("evil\r\n@example.com") == "evil@example.com"
    assert sanitize_address(("Ops", "ops@bücher.example")) == (
        "Ops <ops@xn--bcher-kva.example>"
    )


# Sending --------------------------------------------------------------------


def test_send_goes_through_the_pipeline(
    app: Flask, mail: Mail, poststack_outbox: list[RecordedEmail]
) -> None:
    seen: list[str] = []

    def before(sender: Flask, payload: dict[str, t.Any], **extra: t.Any) -> None:
        seen.append("before_send")

    def sent(sender: Flask, payload: dict[str, t.Any], **extra: t.Any) -> None:
        seen.append("email_sent")

    def dispatched(sender: Flask, message: Message) -> None:  # Flask-Mail's form
        seen.append(f"email_dispatched {message.subject}")

    msg = Message(
        "Receipt",
        recipients=[("Ada", "ada@example.com"), ("Doe, Jane", "jane@example.com")],
        body="Thanks",
        html="<p>Thanks</p>",
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to="help@acme.test",
        extra_headers={"X-Order": "42"},
    )
    msg.attach("r.pdf", "application/pdf", b"%PDF")
    msg.attach("logo.png", "image/png", b"png", "inline", {"Content-ID": "<logo>"})
    msg.attach(data=b"no name", content_type="text/csv")
    with (
        signals.before_send.connected_to(before, app),
        signals.email_sent.connected_to(sent, app),
        email_dispatched.connected_to(dispatched, app),
        mail.record_messages() as outbox,
    ):
        mail.send(msg)
    assert seen == ["before_send", "email_sent", "email_dispatched Receipt"]
    assert outbox == [msg]
    assert msg.date is not None
    (record,) = poststack_outbox
    assert record.status == "sent" and record.captured  # TESTING suppresses
    assert (record.from_, record.to, record.cc, record.bcc) == (
        SENDER,
        ["Ada <ada@example.com>", '"Doe, Jane" <jane@example.com>'],
        ["cc@example.com"],
        ["bcc@example.com"],
    )
    assert (record.subject, record.text, record.html) == (
        "Receipt",
        "Thanks",
        "<p>Thanks</p>",
    )
    assert (record.reply_to, record.headers) == ("help@acme.test", {"X-Order": "42"})
    pdf, logo, unnamed = record.attachments
    assert (pdf["filename"], base64.b64decode(pdf["content"])) == ("r.pdf", b"%PDF")
    assert (logo["content_id"], logo["content_type"]) == ("logo", "image/png")
    assert unnamed["filename"] == "attachment.csv"


def test_a_folded_subject_is_sent_unfolded(
    app: Flask, mail: Mail, poststack_outbox: list[RecordedEmail]
) -> None:
    msg = Message("one\r\n two\r\n\tthree", recipients=["a@example.com"], body="b")
    mail.send(msg)
    assert poststack_outbox[0].subject == "one two\tthree"
    assert "Subject: one\r\n two\r\n\tthree" in msg.as_string()


@pytest.mark.parametrize(
    ("fields", "error", "argument"),
    [
        ({"recipients": []}, IncompleteMessageError, "to"),
        ({"sender": None}, IncompleteMessageError, "from_"),
        ({"subject": "a\r\nb"}, BadHeaderError, "subject"),
        ({"recipients": ["a@example.com\n"]}, BadHeaderError, "to"),
        ({"reply_to": "r@example.com\r"}, BadHeaderError, "reply_to"),
        ({"alts": {"json": "{}"}}, InvalidEmailError, "alts"),
        ({"subject": ""}, InvalidEmailError, "subject"),  # the API needs one
        ({"recipients": ["not an address"]}, InvalidEmailError, "to"),
    ],
)
def test_bad_messages_are_refused_before_anything_is_sent(
    app: Flask,
    mail: Mail,
    poststack_outbox: list[RecordedEmail],
    fields: dict[str, t.Any],
    error: type[Exception],
    argument: str,
) -> None:
    if fields.get("sender", "") is None:
        mail.state.default_sender = None  # type: ignore[union-attr]
    kwargs = {"subject": "s", "recipients": ["a@example.com"], "body": "b", **fields}
    with mail.record_messages() as outbox, pytest.raises(error) as info:
        mail.send(Message(**kwargs))
    assert t.cast(InvalidEmailError, info.value).argument == argument
    assert isinstance(info.value, InvalidEmailError)
    assert (outbox, poststack_outbox) == ([], [])


@pytest.mark.parametrize(
    ("fields", "argument", "fragment"),
    [
        ({"body": None}, "body", "give the Message a body= or html="),
        ({"body": ""}, "body", "give the Message a body= or html="),
        ({"subject": ""}, "subject", "give the Message a subject="),
        ({"subject": None}, "subject", "give the Message a subject="),
    ],
)
def test_missing_parts_are_named_as_message_calls_them(
    app: Flask,
    mail: Mail,
    poststack_outbox: list[RecordedEmail],
    fields: dict[str, t.Any],
    argument: str,
    fragment: str,
) -> None:
    kwargs = {"subject": "s", "recipients": ["a@example.com"], "body": "b", **fields}
    with pytest.raises(InvalidEmailError) as info:
        mail.send(Message(**kwargs))
    assert info.value.argument == argument
    assert fragment in str(info.value)
    assert "template" not in str(info.value)
    assert poststack_outbox == []


@pytest.mark.parametrize(
    ("fields", "argument"),
    [
        *(
            ({field: ["ok@example.com", bad]}, name)
            for field, name in (("cc", "cc"), ("bcc", "bcc"), ("recipients", "to"))
            for bad in ("x@example.com\r\nBcc: evil@x.test", "x@example.com\r")
        ),
        ({"extra_headers": {"X-A\r\nBcc": "v"}}, "headers"),
        ({"extra_headers": {"X-A": "v\r\nBcc: evil@x.test"}}, "headers"),
        ({"attachments": [Attachment("a\r\n.txt", data=b"x")]}, "attachments"),
        (
            {"attachments": [Attachment("a.txt", "text/plain\nX: y", b"x")]},
            "attachments",
        ),
        *(
            (fields, argument)
            for char in ("\x00", "\x0b", "\x85", "\u2028")
            for fields, argument in (
                ({"subject": f"a{char}b"}, "subject"),
                ({"sender": f"a{char}@acme.test"}, "from_"),
                ({"reply_to": f"r{char}@example.com"}, "reply_to"),
                ({"cc": [f"c{char}@example.com"]}, "cc"),
                ({"extra_headers": {"X-A": f"v{char}"}}, "headers"),
                (
                    {"attachments": [Attachment(f"a{char}.txt", data=b"x")]},
                    "attachments",
                ),
            )
        ),
    ],
)
def test_control_characters_in_header_fields_are_bad_headers(
    app: Flask,
    mail: Mail,
    poststack_outbox: list[RecordedEmail],
    fields: dict[str, t.Any],
    argument: str,
) -> None:
    kwargs = {"subject": "s", "recipients": ["a@example.com"], "body": "b", **fields}
    msg = Message(**kwargs)
    assert msg.has_bad_headers() and msg.bad_header() == argument
    with mail.record_messages() as outbox, pytest.raises(BadHeaderError) as info:
        mail.send(msg)
    assert info.value.argument == argument
    assert (outbox, poststack_outbox) == ([], [])
    with pytest.raises(BadHeaderError):
        msg.as_string()


def test_incomplete_messages_are_assertion_errors_as_in_flask_mail(
    app: Flask, mail: Mail
) -> None:
    with pytest.raises(AssertionError, match="no recipients"):
        mail.send(Message("s", body="b"))


def test_attachment_headers_other_than_content_id_are_refused(
    app: Flask, mail: Mail
) -> None:
    msg = Message("s", recipients=["a@example.com"], body="b")
    msg.attach("a.txt", data=b"x", headers={"X-Thing": "1"})
    with pytest.raises(InvalidEmailError, match="Content-ID") as info:
        mail.send(msg)
    assert info.value.argument == "attachments"


def test_a_connection_sends_many_and_counts(
    app: Flask, mail: Mail, poststack_outbox: list[RecordedEmail]
) -> None:
    with mail.record_messages() as outbox, mail.connect() as conn:
        for n in range(3):
            conn.send(Message(f"n{n}", recipients=["a@example.com"], body="b"))
        conn.send_message("last", recipients=["a@example.com"], body="b")
    assert conn.num_emails == 4
    assert [m.subject for m in outbox] == ["n0", "n1", "n2", "last"]
    assert [r.subject for r in poststack_outbox] == ["n0", "n1", "n2", "last"]


def test_a_raising_dispatched_receiver_is_logged_not_raised(
    app: Flask, mail: Mail, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Flask, message: Message) -> None:
        raise RuntimeError("receiver bug")

    with email_dispatched.connected_to(broken, app), mail.record_messages() as outbox:
        mail.send_message("s", recipients=["a@example.com"], body="b")
    assert len(outbox) == 1
    assert "email_dispatched receiver failed" in caplog.text


def test_send_keeps_the_request_context(
    app: Flask, mail: Mail, poststack_outbox: list[RecordedEmail]
) -> None:
    def tag(sender: Flask, payload: dict[str, t.Any], **extra: t.Any) -> None:
        payload["tags"] = [g.get("tenant", "none")]

    with app.test_request_context(), signals.before_send.connected_to(tag, app):
        g.tenant = "acme"
        mail.send_message("s", recipients=["a@example.com"], body="b")
    assert poststack_outbox[0].tags == ["acme"]


def test_a_real_send_reaches_the_api(sandbox: Sandbox) -> None:
    # MAIL_SUPPRESS_SEND=False sends for real, even while TESTING.
    app = flask_mail_app(
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        MAIL_SUPPRESS_SEND=False,
    )
    mail = Mail(app)
    with app.app_context():
        msg = Message("Invoice", recipients=["ada@example.com"], html="<b>Due</b>")
        msg.attach("invoice.pdf", "application/pdf", b"%PDF-1.4 bytes")
        mail.send(msg)
    (stored,) = sandbox.emails
    assert (stored.to, stored.subject, stored.html) == (
        ["ada@example.com"],
        "Invoice",
        "<b>Due</b>",
    )
    assert stored.input.from_address == "hello@acme.test"
    assert [(a.filename, a.content) for a in stored.attachments] == [
        ("invoice.pdf", b"%PDF-1.4 bytes")
    ]


def test_mail_suppress_send_suppresses(sandbox: Sandbox) -> None:
    app = flask_mail_app(
        TESTING=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        MAIL_SUPPRESS_SEND=True,
    )
    mail = Mail(app)
    with app.app_context(), mail.record_messages() as outbox:
        mail.send_message("s", recipients=["a@example.com"], body="b")
    assert len(outbox) == 1
    assert sandbox.emails == []
    assert get_state(app).outbox[0]["subject"] == "s"


def test_the_queue_setting_queues_with_no_change_at_the_call_site(
    poststack_queue: FakeQueue, poststack_outbox: list[RecordedEmail], sandbox: Sandbox
) -> None:
    app = poststack_queue.app
    mail = Mail()  # the app-factory pattern: init_app ran in poststack_app
    with app.app_context(), mail.record_messages() as outbox:
        mail.send_message("Queued", recipients=["a@example.com"], body="b")
    assert [m.subject for m in outbox] == ["Queued"]
    (record,) = poststack_outbox
    assert (record.status, record.subject) == ("queued", "Queued")
    assert record.job is not None and record.job.id == poststack_queue.jobs[0].id
    assert sandbox.emails == []
    poststack_queue.run()
    assert record.status == "sent"
    assert [e.subject for e in sandbox.emails] == ["Queued"]


@pytest.fixture
def poststack_app(sandbox: Sandbox) -> Flask:
    """The app the pytest plugin's queue fixtures use: queueing on, sending
    not suppressed (to the sandbox)."""
    app = flask_mail_app(
        POSTSTACK_FLASK_MAIL_QUEUE=True,
        MAIL_SUPPRESS_SEND=False,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
    )
    Mail(app)
    return app


@pytest.mark.parametrize(
    "config",
    [{"MAIL_SUPPRESS_SEND": True, "TESTING": False}, {"TESTING": True}],
)
def test_queue_mode_captures_while_suppressed(
    poststack_queue: FakeQueue,
    poststack_outbox: list[RecordedEmail],
    sandbox: Sandbox,
    config: dict[str, t.Any],
) -> None:
    app = flask_mail_app(
        POSTSTACK_FLASK_MAIL_QUEUE=True,
        POSTSTACK_API_KEY=KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        **config,
    )
    mail = Mail(app)
    queue = type(poststack_queue)(app, poststack_queue.connection)
    with get_state(app).use_redis(poststack_queue.connection):
        with app.app_context(), mail.record_messages() as outbox:
            mail.send_message("Held", recipients=["a@example.com"], body="b")
        assert [m.subject for m in outbox] == ["Held"]
        assert [p["subject"] for p in get_state(app).outbox] == ["Held"]
        assert queue.jobs == []
        queue.run()
    assert sandbox.emails == []


def test_the_flask_mail_user_app_sends_for_real_with_only_the_key_added(
    sandbox: Sandbox,
) -> None:
    from tests.flask_mail_app.app import create_app
    from tests.flask_mail_app.config import Config

    class Production(Config):
        POSTSTACK_API_KEY = KEY
        POSTSTACK_BASE_URL = sandbox.base_url

    app = create_app(Production)
    response = app.test_client().post(
        "/reset_password", data={"email": "susan@example.com"}
    )
    assert response.text == "Check your email"
    (stored,) = sandbox.emails
    assert stored.to == ["susan@example.com"]
    assert (stored.input.from_name, stored.input.from_address) == (
        "Microblog",
        "noreply@microblog.test",
    )
    assert stored.subject == "[Microblog] Reset Your Password"
    assert stored.html is not None and "click here" in stored.html
