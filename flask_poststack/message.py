"""The arguments of one email, and how they become the JSON body of
``POST /emails``.

:class:`EmailArgs` declares the arguments once; ``send_email``,
``enqueue_email``, ``send_batch``, ``enqueue_batch`` and ``enqueue_many``
all take them. :func:`build_payload` is the one place where they become a
wire payload, so a synchronous send and a queued one send the same bytes. It
never touches the network, and everything it returns is plain JSON data.
"""

from __future__ import annotations

import datetime as dt
import difflib
import typing as t
import uuid
from collections.abc import Mapping
from collections.abc import Sequence

from . import _extra
from . import _fields
from ._attachments import Attachment
from ._attachments import AttachmentLike
from ._attachments import AttachmentPayload
from ._attachments import build_attachments
from ._attachments import MAX_ATTACHMENT_BYTES
from ._attachments import MAX_TOTAL_ATTACHMENT_BYTES
from ._fields import MAX_RECIPIENTS
from ._fields import ORIGINAL_RECIPIENTS_HEADER
from ._templates import render_email
from .config import Settings
from .errors import InvalidEmailError
from .errors import UnknownArgumentError

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_RECIPIENTS",
    "MAX_TOTAL_ATTACHMENT_BYTES",
    "ORIGINAL_RECIPIENTS_HEADER",
    "Attachment",
    "AttachmentLike",
    "AttachmentPayload",
    "EmailArgs",
    "Payload",
    "build_payload",
]

#: Longest ``idempotency_key`` accepted.
MAX_IDEMPOTENCY_KEY_LENGTH = 255


class EmailArgs(t.TypedDict, total=False):
    """The keyword arguments of one email, all optional.

    ``send_email(**args)`` and every other entry point take these; the ones
    that queue take their queue options besides. ``None`` means "not
    given", as leaving the argument out does.
    """

    #: An address or a list of up to 50. Display names such as
    #: ``"Ada Lovelace <ada@example.com>"`` are accepted.
    to: str | Sequence[str] | None
    #: Required unless a template supplies it.
    subject: str | None
    #: The HTML body.
    html: str | None
    #: The plain text body.
    text: str | None
    #: The sender, sent as the wire key ``from``. Defaults to
    #: ``POSTSTACK_DEFAULT_FROM``.
    from_: str | None
    #: Like ``to``.
    cc: str | Sequence[str] | None
    #: Like ``to``.
    bcc: str | Sequence[str] | None
    #: One address. Defaults to ``POSTSTACK_DEFAULT_REPLY_TO``.
    reply_to: str | None
    #: Extra MIME headers, name to value.
    headers: Mapping[str, str] | None
    #: Added after ``POSTSTACK_DEFAULT_TAGS``; duplicates dropped.
    tags: str | Sequence[str] | None
    #: :class:`Attachment` objects, mappings with the same keys, paths, or
    #: binary file objects.
    attachments: Sequence[AttachmentLike] | None
    #: A Jinja template name without suffix: its ``.html``, ``.txt`` and
    #: ``.subject.txt`` files are rendered, whichever exist.
    template: str | None
    #: The variables for ``template``.
    context: Mapping[str, t.Any] | None
    #: Render ``template`` in this locale (``"de"``, ``"pt_BR"``), with
    #: Flask-Babel's ``force_locale``; needs Flask-Babel in the app.
    locale: str | None
    #: A server-side template (``tpl_...``).
    template_id: str | None
    #: The variables for ``template_id``: string keys; string, number or
    #: boolean values, sent as strings.
    variables: Mapping[str, t.Any] | None
    #: When to send: an aware datetime or an ISO-8601 string with an offset
    #: or ``Z``.
    scheduled_at: dt.datetime | str | None
    #: Makes repeated sends of this email replay instead of sending again.
    idempotency_key: str | None
    #: Open and click tracking: ``{"opens": bool, "clicks": bool}`` (either
    #: may be left out), or ``False``/``True`` for both. Over
    #: ``POSTSTACK_TRACKING``; unset keys follow the domain's settings.
    tracking: bool | Mapping[str, bool] | None
    #: Ask the API for a one-click ``List-Unsubscribe`` header. Defaults to
    #: ``POSTSTACK_UNSUBSCRIBE``.
    unsubscribe: bool | None
    #: API fields this version does not know, merged into the body as they
    #: are (JSON values); a key the body already has is refused.
    extra: Mapping[str, t.Any] | None


#: The names :class:`EmailArgs` declares.
EMAIL_ARGS = frozenset(EmailArgs.__annotations__)
_NOT_WIRE = frozenset({"from_", "template", "context", "extra", "locale"})

#: The wire keys of :data:`Payload`, each with the argument that sets it.
_WIRE_ARGS = {"from": "from_", **{k: k for k in EMAIL_ARGS if k not in _NOT_WIRE}}
#: Every name ``extra=`` must not use, with the argument to pass instead.
_KNOWN_FIELDS = {**{k: k for k in EMAIL_ARGS}, **_WIRE_ARGS}

#: What other libraries call some arguments, for the unknown-argument hint.
_ALIASES = {
    "body": "text",
    "recipients": "to",
    "recipient": "to",
    "sender": "from_",
    "from": "from_",
    "reply-to": "reply_to",
    "attachment": "attachments",
}

#: The JSON body of ``POST /emails``, as :func:`build_payload` returns it.
Payload = t.TypedDict(
    "Payload",
    {
        "from": str,
        "to": list[str],
        "cc": list[str],
        "bcc": list[str],
        "reply_to": str,
        "subject": str,
        "html": str,
        "text": str,
        "headers": dict[str, str],
        "tags": list[str],
        "attachments": list[AttachmentPayload],
        "template_id": str,
        "variables": dict[str, str],
        "scheduled_at": str,
        "idempotency_key": str,
        "tracking": dict[str, bool],
        "unsubscribe": bool,
    },
    total=False,
)


def check_names(names: t.Iterable[str]) -> None:
    """Refuse a name that is not an email argument, suggesting the closest.

    :raises InvalidEmailError: naming the unknown argument.
    """
    for name in names:
        if name not in EMAIL_ARGS:
            raise UnknownArgumentError(name, _closest(name))


def _closest(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    return _ALIASES.get(name) or next(
        iter(difflib.get_close_matches(name, EMAIL_ARGS, n=1)), None
    )


def build_payload(settings: Settings, args: Mapping[str, t.Any]) -> Payload:
    """Validate the arguments of an email and return its ``POST /emails`` body.

    The result is plain JSON data without ``None`` values, ready for
    ``client.emails.send()`` or for an RQ job. Rendering a Jinja ``template``
    needs an app context; nothing else does.

    :param settings: the app's settings, for the defaults
        (``POSTSTACK_DEFAULT_FROM``, ``..._REPLY_TO``, ``..._TAGS``) and the
        staging safety nets (``POSTSTACK_REDIRECT_TO``,
        ``POSTSTACK_ALLOWED_RECIPIENTS``).
    :param args: the :class:`EmailArgs`; a value of ``None`` counts as not
        given.
    :raises InvalidEmailError: an argument is invalid or unknown;
        ``.argument`` names it.
    :raises RecipientNotAllowedError: a recipient is outside
        ``POSTSTACK_ALLOWED_RECIPIENTS``.
    """
    check_names(args)
    to, cc, bcc = args.get("to"), args.get("cc"), args.get("bcc")
    subject, html, text = args.get("subject"), args.get("html"), args.get("text")
    from_, reply_to = args.get("from_"), args.get("reply_to")
    headers, tags, attachments = (
        args.get("headers"),
        args.get("tags"),
        args.get("attachments"),
    )
    template, context = args.get("template"), args.get("context")
    template_id, variables = args.get("template_id"), args.get("variables")
    scheduled_at, idempotency_key = (
        args.get("scheduled_at"),
        args.get("idempotency_key"),
    )
    if template is not None and template_id is not None:
        raise InvalidEmailError(
            "template", "give either 'template' (Jinja) or 'template_id', not both."
        )
    if context is not None and template is None:
        raise InvalidEmailError("context", "is only used together with 'template'.")
    if args.get("locale") is not None and template is None:
        raise InvalidEmailError(
            "locale", "is only used together with 'template' (it is rendered in it)."
        )
    if variables is not None and template_id is None:
        raise InvalidEmailError(
            "variables", "is only used together with 'template_id'."
        )

    recipients = {
        name: _fields.address_list(name, value)
        for name, value in (("to", to), ("cc", cc), ("bcc", bcc))
    }
    if not any(recipients.values()):
        raise InvalidEmailError("to", "the email has no recipient.")
    if not recipients["to"]:
        raise InvalidEmailError("to", "give at least one address in 'to'.")
    sender = _fields.sender(from_, settings.default_from)
    if reply_to is None:
        reply_to = settings.default_reply_to
    if reply_to is not None:
        reply_to = _fields.address("reply_to", reply_to, single=True)[0]
    extra_headers = _fields.header_map(headers)
    all_tags = _fields.tag_list(settings.default_tags, tags)
    subject = _fields.optional_str("subject", subject)
    html = _fields.optional_str("html", html)
    text = _fields.optional_str("text", text)
    if template is not None:
        rendered = render_email(
            template,
            context,
            args.get("locale"),
            text_from_html=settings.text_from_html,
            inline_css=settings.inline_css,
        )
        subject = subject or rendered.subject
        html = html or rendered.html
        text = text or rendered.text
    if subject is not None and _fields.CONTROL.search(subject):
        raise InvalidEmailError(
            "subject", "must not contain CR, LF or other control characters."
        )
    if template_id is not None:
        template_id = _fields.token("template_id", template_id)
    if not (html or text or template_id):
        raise InvalidEmailError(
            "html", "the email has no body: give html, text, template or template_id."
        )
    if not subject and template_id is None:
        hint = f" or add {template}.subject.txt" if template else ""
        raise InvalidEmailError("subject", f"is required; pass subject={hint}.")
    rest: dict[str, t.Any] = {
        "tracking": _fields.tracking(args.get("tracking"), settings.tracking),
        "unsubscribe": _fields.flag(
            "unsubscribe", args.get("unsubscribe"), settings.unsubscribe
        ),
        "attachments": None if attachments is None else build_attachments(attachments),
        "template_id": template_id,
        "variables": None if variables is None else _fields.variable_map(variables),
        "scheduled_at": None
        if scheduled_at is None
        else _fields.scheduled_time(scheduled_at),
        "idempotency_key": None
        if idempotency_key is None
        else _fields.token(
            "idempotency_key", idempotency_key, MAX_IDEMPOTENCY_KEY_LENGTH
        ),
    }

    if settings.redirect_to is not None:
        extra_headers = _fields.redirect(
            settings.redirect_to, recipients, extra_headers
        )
    if settings.allowed_recipients:
        _fields.check_allowed(settings.allowed_recipients, recipients)

    fields = {
        "from": sender,
        **{name: [written for written, _ in recipients[name]] for name in recipients},
        "reply_to": reply_to,
        "subject": subject,
        "html": html,
        "text": text,
        "headers": extra_headers,
        "tags": all_tags,
        **rest,
    }
    # Unset and empty fields are left out: the wire has no nulls.
    payload = {key: value for key, value in fields.items() if value}
    for key, value in payload.items():
        _fields.check_utf8("from_" if key == "from" else key, value)
    payload.update(_extra.check_extra(args.get("extra"), _KNOWN_FIELDS))
    return t.cast(Payload, payload)


def new_key() -> str:
    """A fresh idempotency key for an email that has none."""
    return f"fps-{uuid.uuid4().hex}"


def build_all(settings: Settings, messages: object) -> list[dict[str, t.Any]]:
    """:func:`build_payload` for each of ``messages``, each with an
    idempotency key (its own, or a new one).

    :raises InvalidEmailError: naming the message and argument, e.g.
        ``messages[3].to``; nothing is built.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(
        messages, Sequence
    ):
        raise InvalidEmailError("messages", "must be a list of argument mappings.")
    if not messages:
        raise InvalidEmailError("messages", "must not be empty.")
    payloads = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidEmailError(where, "must be a mapping of send_email arguments.")
        try:
            payload: dict[str, t.Any] = dict(build_payload(settings, message))
        except InvalidEmailError as exc:
            raise InvalidEmailError(f"{where}.{exc.argument}", exc.message) from exc
        payload.setdefault("idempotency_key", new_key())
        payloads.append(payload)
    return payloads
