"""The preview pages at /_poststack/previews: when they exist, who may see
them, undefined variables, and that a preview is what a send sends."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask

from flask_poststack import PostStack
from flask_poststack import send_email
from flask_poststack.sandbox import Sandbox

from .conftest import AppFactory
from .conftest import TEST_KEY
from .helpers import german_templates

URL = "/_poststack/previews"


def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates" / "emails"
    folder.mkdir(parents=True)
    (folder / "welcome.subject.txt").write_text("Welcome, {{ name }}!\n")
    (folder / "welcome.html").write_text(
        "<p>Hi {{ name }} &amp; {{ team }}</p><p>{{ missing_thing }}</p>\n"
    )
    (folder / "welcome.txt").write_text("Hi {{ name }}\n")
    return tmp_path / "templates"


def previews_app(make_app: AppFactory, tmp_path: Path, **config: t.Any) -> Flask:
    app = make_app(template_folder=templates(tmp_path), register=False, **config)
    poststack = PostStack()

    @poststack.preview
    def welcome() -> dict[str, t.Any]:
        return {
            "to": "ada@example.com",
            "template": "emails/welcome",
            "context": {"name": "Ada <3", "team": "R&D"},
            "headers": {"X-Campaign-Id": "spring"},
        }

    @poststack.preview("broken")
    def _broken() -> dict[str, t.Any]:
        return {"to": "not an address", "subject": "x", "text": "x"}

    poststack.init_app(app)
    return app


@pytest.mark.parametrize(
    ("debug", "setting", "registered"),
    [
        (False, None, False),
        (True, None, True),
        (False, True, True),
        (True, False, False),
    ],
)
def test_registered_in_debug_or_as_the_setting_says(
    make_app: AppFactory,
    tmp_path: Path,
    debug: bool,
    setting: bool | None,
    registered: bool,
) -> None:
    app = previews_app(make_app, tmp_path, DEBUG=debug, POSTSTACK_PREVIEWS=setting)
    answer = app.test_client().get(URL + "/")
    assert answer.status_code == (200 if registered else 404)


def test_index_and_page(make_app: AppFactory, tmp_path: Path) -> None:
    app = previews_app(make_app, tmp_path, POSTSTACK_PREVIEWS=True)
    client = app.test_client()
    index = client.get(URL + "/").text
    assert f'href="{URL}/welcome"' in index and f'href="{URL}/broken"' in index
    answer = client.get(URL + "/welcome")
    page = answer.text
    csp = answer.headers["Content-Security-Policy"]
    assert "script-src" not in csp and csp.startswith("default-src 'none'")
    assert "Welcome, Ada &lt;3!" in page and "X-Campaign-Id" in page
    # The undefined variable is named as an error, not left as a blank.
    assert "Undefined in <code>emails/welcome.html</code>" in page
    assert "<code>missing_thing</code>" in page
    assert "<iframe sandbox srcdoc=" in page
    # No sandbox configured: no send button.
    assert "Send to the sandbox" not in page
    broken = client.get(URL + "/broken").text
    assert 'role="alert">InvalidEmailError: ' in broken and "to" in broken
    assert client.get(URL + "/nope").status_code == 404


def test_local_requests_only(make_app: AppFactory, tmp_path: Path) -> None:
    app = previews_app(make_app, tmp_path, POSTSTACK_PREVIEWS=True)
    client = app.test_client()
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get(URL + "/", environ_overrides=remote).status_code == 404
    ipv6 = {"REMOTE_ADDR": "::1"}
    assert client.get(URL + "/", environ_overrides=ipv6).status_code == 200


@pytest.mark.parametrize(
    ("environ", "status"),
    [
        # DNS rebinding: a remote page whose name now points at 127.0.0.1.
        ({"HTTP_HOST": "attacker.example"}, 404),
        ({"HTTP_HOST": "attacker.example:5000"}, 404),
        ({"HTTP_HOST": "127.0.0.1.nip.io"}, 404),
        ({"HTTP_HOST": "[::1]evil"}, 404),
        ({"HTTP_HOST": " localhost"}, 404),
        ({"HTTP_HOST": "127.0.0.2:5000"}, 200),
        ({"HTTP_HOST": "[::1]:5000"}, 200),
        ({"HTTP_HOST": "LocalHost:5000"}, 200),
        # A proxy on this machine passing on a remote client.
        ({"HTTP_X_FORWARDED_FOR": "203.0.113.9"}, 404),
        ({"HTTP_X_FORWARDED_FOR": "127.0.0.1, 203.0.113.9"}, 404),
        ({"HTTP_X_FORWARDED_FOR": "127.0.0.1, ::1"}, 200),
        ({"HTTP_X_REAL_IP": "203.0.113.9"}, 404),
        ({"HTTP_FORWARDED": "for=203.0.113.9;proto=https"}, 404),
        ({"HTTP_FORWARDED": 'for="[2001:db8::1]:443"'}, 404),
        ({"HTTP_FORWARDED": "for=unknown"}, 404),
        ({"HTTP_FORWARDED": 'for="[::1]:443", for=127.0.0.1:80'}, 200),
    ],
)
def test_only_this_machine_by_its_own_name(
    make_app: AppFactory, tmp_path: Path, environ: dict[str, str], status: int
) -> None:
    app = previews_app(make_app, tmp_path, POSTSTACK_PREVIEWS=True)
    client = app.test_client()
    local = {"REMOTE_ADDR": "127.0.0.1", **environ}
    assert client.get(URL + "/", environ_overrides=local).status_code == status
    page = client.get(URL + "/welcome", environ_overrides=local)
    assert page.status_code == status


def test_a_rebound_name_cannot_send(
    make_app: AppFactory, tmp_path: Path, sandbox: Sandbox
) -> None:
    app = previews_app(
        make_app,
        tmp_path,
        POSTSTACK_PREVIEWS=True,
        POSTSTACK_API_KEY=TEST_KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
    )
    client = app.test_client()
    # The attacker's page posts to its own origin, now resolving to us.
    rebound = {"HTTP_HOST": "attacker.example:5000"}
    origin = {"Origin": "http://attacker.example:5000"}
    answer = client.post(
        URL + "/welcome/send", headers=origin, environ_overrides=rebound
    )
    assert answer.status_code == 404 and sandbox.emails == []
    # An Origin that is not loopback is refused whatever the Host says.
    assert client.post(URL + "/welcome/send", headers=origin).status_code == 403
    loopback = {"HTTP_HOST": "127.0.0.1:5000"}
    sent = client.post(
        URL + "/welcome/send",
        headers={"Origin": "http://127.0.0.1:5000"},
        environ_overrides=loopback,
    )
    assert sent.status_code == 302 and len(sandbox.emails) == 1


def test_a_preview_is_what_a_send_sends(
    make_app: AppFactory, tmp_path: Path, sandbox: Sandbox
) -> None:
    app = previews_app(
        make_app,
        tmp_path,
        POSTSTACK_PREVIEWS=True,
        POSTSTACK_API_KEY=TEST_KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
    )
    client = app.test_client()
    preview = client.get(URL + "/welcome.json").json
    assert preview is not None
    assert preview["undefined"] == {"emails/welcome.html": ["missing_thing"]}
    payload = preview["payload"]
    with app.app_context():
        sent = send_email(
            to="ada@example.com",
            template="emails/welcome",
            context={"name": "Ada <3", "team": "R&D"},
            headers={"X-Campaign-Id": "spring"},
        )
    stored = sandbox.get_email(sent.id)
    assert (stored.subject, stored.html, stored.text) == (
        payload["subject"],
        payload["html"],
        payload["text"],
    )
    assert payload["html"].startswith("<p>Hi Ada &lt;3 &amp; R&amp;D</p>")

    page = client.get(URL + "/welcome").text
    assert "Send to the sandbox" in page
    # The sandbox's POST /emails/preview spam report, asked for the page.
    assert '<td id="spam">0 <span class="muted">(no action;' in page
    assert sandbox.requests[-1]["path"] == "/emails/preview"
    # Another origin's form cannot send.
    forged = {"Origin": "http://evil.test"}
    assert client.post(URL + "/welcome/send", headers=forged).status_code == 403
    assert client.post(URL + "/welcome/send").status_code == 403
    answer = client.post(URL + "/welcome/send", headers={"Origin": "http://localhost"})
    assert answer.status_code == 302
    broken = client.post(URL + "/broken/send", headers={"Origin": "http://localhost"})
    assert broken.status_code == 400 and len(sandbox.emails) == 2
    newest = sandbox.emails[-1]
    assert f"sent={newest.id}" in answer.headers["Location"]
    assert newest.html == payload["html"]


def test_names_are_unique() -> None:
    poststack = PostStack()

    def one() -> dict[str, t.Any]:
        return {}

    poststack.preview("x")(one)
    with pytest.raises(ValueError, match="'x' is already registered"):
        poststack.preview("x")(lambda: {})


def test_the_locale_switch_renders_as_a_send_in_that_locale(
    make_app: AppFactory, tmp_path: Path, sandbox: Sandbox
) -> None:
    from flask_babel import Babel

    translations = german_templates(
        tmp_path, "{{ _('Welcome') }}, Ada", Welcome="Willkommen"
    )
    app = make_app(
        template_folder=str(tmp_path),
        register=False,
        POSTSTACK_PREVIEWS=True,
        POSTSTACK_API_KEY=TEST_KEY,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
        BABEL_TRANSLATION_DIRECTORIES=str(translations),
    )
    Babel(app)
    poststack = PostStack()

    @poststack.preview
    def hi() -> dict[str, t.Any]:
        return {"to": "ada@example.com", "template": "emails/hi"}

    poststack.init_app(app)
    client = app.test_client()
    default = client.get(URL + "/hi").text
    assert 'name="locale"' in default and "<td>Welcome</td>" in default
    german = client.get(URL + "/hi?locale=de").text
    assert "<td>Willkommen</td>" in german and "?width=mobile&amp;locale=de" in german
    json = client.get(URL + "/hi.json?locale=de").json
    assert json is not None and json["payload"]["text"] == "Willkommen, Ada"
    bad = client.get(URL + "/hi?locale=xx_QQ").text
    assert 'role="alert">InvalidEmailError: ' in bad and "locale" in bad
    sent = client.post(
        URL + "/hi/send", data={"locale": "de"}, headers={"Origin": "http://localhost"}
    )
    assert "locale=de" in sent.headers["Location"]
    assert sandbox.emails[-1].subject == "Willkommen"


def test_an_attachment_name_outside_latin_1_is_served(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = make_app(register=False, POSTSTACK_PREVIEWS=True)
    poststack = PostStack()

    @poststack.preview
    def report() -> dict[str, t.Any]:
        attachment = {"filename": "отчёт.txt", "content": b"hi"}
        return {
            "to": "a@example.com",
            "subject": "s",
            "text": "t",
            "attachments": [attachment],
        }

    poststack.init_app(app)
    answer = app.test_client().get(URL + "/report/attachments/0")
    assert answer.status_code == 200 and answer.data == b"hi"
    assert answer.headers["Content-Disposition"] == (
        'inline; filename="file.txt";'
        " filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.txt"
    )


def test_a_raising_preview_and_a_missing_key_are_shown_not_500(
    make_app: AppFactory, tmp_path: Path, sandbox: Sandbox
) -> None:
    app = make_app(
        template_folder=templates(tmp_path),
        register=False,
        POSTSTACK_PREVIEWS=True,
        POSTSTACK_BASE_URL=sandbox.base_url,
        POSTSTACK_SUPPRESS_SEND=False,
    )  # no POSTSTACK_API_KEY
    poststack = PostStack()

    @poststack.preview
    def welcome() -> dict[str, t.Any]:
        return {"to": "ada@example.com", "subject": "Hi", "text": "Hi"}

    @poststack.preview
    def crash() -> dict[str, t.Any]:
        raise RuntimeError("the fixture data is gone")

    poststack.init_app(app)

    client = app.test_client()
    index = client.get(URL + "/")
    assert index.status_code == 200 and "crash" in index.text
    page = client.get(URL + "/crash")
    assert page.status_code == 200
    assert "RuntimeError: the fixture data is gone" in page.text
    host = {"HTTP_HOST": "127.0.0.1:5000"}
    sent = client.post(
        URL + "/welcome/send",
        headers={"Origin": "http://127.0.0.1:5000"},
        environ_overrides=host,
    )
    assert sent.status_code == 400 and "POSTSTACK_API_KEY" in sent.text
    assert sandbox.emails == []
    refused = client.post(URL + "/welcome/send", environ_overrides=host)
    assert refused.status_code == 403 and "Origin" in refused.text
