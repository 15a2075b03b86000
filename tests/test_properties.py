"""Property-based checks of the two public entry points.

For any input, ``send_email`` and ``enqueue_email`` either succeed or raise
:exc:`InvalidEmailError` (a ``ValueError`` naming the argument); and every
payload that reaches the queue is one the API's own validation accepts.
"""

from __future__ import annotations

import datetime as dt
import json
import typing as t
import zlib

import fakeredis
import pytest
from flask import Flask
from hypothesis import event
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_poststack import Attachment
from flask_poststack import enqueue_email
from flask_poststack import get_state
from flask_poststack import InvalidEmailError
from flask_poststack import send_email
from flask_poststack._fields import address
from flask_poststack.sandbox import SandboxConfig
from flask_poststack.sandbox.validation import InvalidRequest
from flask_poststack.sandbox.validation import parse_send

if t.TYPE_CHECKING:
    from tests.conftest import AppFactory

ADDRESSES = st.sampled_from(
    ["ada@example.com", "Ada Lovelace <ada@example.com>", "b+tag@sub.example.org"]
)
JUNK = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # surrogates
    st.integers(),
    st.booleans(),
    st.binary(max_size=10),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


WORDS = st.text(
    st.characters(categories=("L", "N", "Zs", "P")), min_size=1, max_size=40
)
VALID = st.fixed_dictionaries(
    {
        "to": st.one_of(ADDRESSES, st.lists(ADDRESSES, min_size=1, max_size=3)),
        "subject": WORDS.filter(str.strip),
        "text": WORDS,
    },
    optional={
        "html": WORDS,
        "from_": ADDRESSES,
        "cc": ADDRESSES,
        "bcc": st.lists(ADDRESSES, max_size=2),
        "reply_to": ADDRESSES,
        "headers": st.dictionaries(
            st.sampled_from(["X-Order", "X-Campaign", "List-Id"]), WORDS, max_size=2
        ),
        "tags": st.lists(st.text("abcdefgh-", min_size=1, max_size=10), max_size=3),
        "attachments": st.lists(
            st.builds(
                Attachment,
                filename=st.sampled_from(["a.pdf", "b.txt", "c.png"]),
                content=st.binary(max_size=64),
            ),
            max_size=2,
        ),
        "scheduled_at": st.datetimes(
            min_value=dt.datetime(2030, 1, 1),
            max_value=dt.datetime(2031, 1, 1),
            timezones=st.just(dt.timezone.utc),
        ),
        "idempotency_key": st.text("abcdef0123456789-_", min_size=1, max_size=20),
    },
)
ARGUMENTS = [
    "to", "subject", "html", "text", "from_", "cc", "bcc", "reply_to", "headers",
    "tags", "attachments", "template_id", "variables", "scheduled_at",
    "idempotency_key", "context", "template",
]  # fmt: skip
#: A valid email with up to two arguments replaced by anything at all.
EMAILS = st.one_of(
    VALID,
    st.tuples(VALID, st.dictionaries(st.sampled_from(ARGUMENTS), JUNK, max_size=2)).map(
        lambda pair: {**pair[0], **pair[1]}
    ),
)

FAST = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def app(make_app: AppFactory) -> t.Iterator[Flask]:
    app = make_app()  # TESTING: sends are captured, nothing leaves the process
    connection = fakeredis.FakeRedis()
    with get_state(app).use_redis(connection):
        yield app
    connection.close()


@FAST
@given(email=EMAILS)
def test_send_email_succeeds_or_raises_invalid_email_error(
    app: Flask, email: dict[str, t.Any]
) -> None:
    with app.app_context():
        try:
            send_email(**email)
        except InvalidEmailError as exc:
            assert isinstance(exc, ValueError)
            assert exc.argument
            event(f"refused: {exc.argument}")
            return
    event("sent")
    (payload,) = get_state(app).outbox[-1:]
    parse_send(json.loads(json.dumps(payload)), SandboxConfig())


@FAST
@given(email=EMAILS)
def test_nothing_invalid_reaches_the_queue(app: Flask, email: dict[str, t.Any]) -> None:
    redis = get_state(app).redis
    redis.flushall()
    with app.app_context():
        try:
            enqueue_email(**email)
        except InvalidEmailError:
            assert redis.dbsize() == 0  # nothing half-queued
            event("refused")
            return
    event("queued")
    (key,) = [k for k in redis.scan_iter("rq:job:*") if redis.type(k) == b"hash"]
    data = redis.hget(key, "data")
    assert isinstance(data, bytes)
    _, _, (payload,), _ = json.loads(zlib.decompress(data))
    parse_send(payload, SandboxConfig())  # the API's rules accept it


# Addresses: the extension and the sandbox share one display-name rule
# (flask_poststack._display_name); these check that nothing the extension lets
# through is one the sandbox (the API's validation) refuses.

NAMES = st.text(
    st.one_of(
        st.sampled_from('"\\<>(),;:@[]. \t'),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
    ),
    max_size=12,
)
NAMED = st.one_of(
    st.builds("{} <ada@example.com>".format, NAMES),
    st.builds('"{}" <ada@example.com>'.format, NAMES),
    st.builds("{}<{}>".format, NAMES, st.emails()),
)
ANY_ADDRESS = st.one_of(NAMED, st.emails(), st.text(max_size=30))


def _extension_accepts(value: str) -> bool:
    try:
        address("to", value)
    except InvalidEmailError:
        return False
    return True


def _sandbox_accepts(field: str, value: str) -> bool:
    body = {"from": value, "to": [value], "subject": "s", "text": "t"}
    try:
        email = parse_send(body, SandboxConfig())
    except InvalidRequest as exc:
        assert exc.status == 422, exc.message
        return False
    assert email.to == [value]
    return True


@FAST
@given(value=ANY_ADDRESS)
def test_every_address_the_extension_accepts_the_sandbox_accepts(value: str) -> None:
    if _extension_accepts(value):
        event("accepted")
        assert _sandbox_accepts("to", value.strip())
    else:
        event("refused")


@FAST
@given(value=NAMED.filter(lambda v: v.endswith("<ada@example.com>")))
def test_the_two_agree_on_display_names(value: str) -> None:
    # With a bare address both accept, only the display name decides.
    value = value.strip()  # as the extension sends it
    assert _extension_accepts(value) == _sandbox_accepts("to", value)
