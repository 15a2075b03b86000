"""Exceptions raised by Flask-PostStack.

::

    FlaskPostStackError(Exception)
    ├── InvalidEmailError(ValueError)          bad input; .argument names it
    │   ├── UnknownArgumentError(TypeError)    not an email argument; .closest
    │   └── RecipientNotAllowedError           outside POSTSTACK_ALLOWED_RECIPIENTS
    ├── ConfigurationError(RuntimeError)       bad config; .key names it
    ├── QueueUnavailableError(ConnectionError) Redis failed; .may_have_been_queued,
    │                                          .idempotency_key(s), .job_id(s), .url
    ├── SendCancelled                          raised by a before_send receiver
    └── WebhookVerificationError               a webhook failed its signature check

    poststack.PostStackError                   API errors, re-raised unchanged

No message or repr here ever contains the API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from poststack import PostStackError

__all__ = [
    "ConfigurationError",
    "FlaskPostStackError",
    "InvalidEmailError",
    "PostStackError",
    "QueueUnavailableError",
    "RecipientNotAllowedError",
    "SendCancelled",
    "UnknownArgumentError",
    "WebhookVerificationError",
]


class FlaskPostStackError(Exception):
    """Base class of every exception this package raises itself."""


class InvalidEmailError(FlaskPostStackError, ValueError):
    """An argument of ``send_email`` / ``enqueue_email`` is invalid.

    Raised before any network call and before anything is queued.

    :param argument: the name of the offending keyword argument.
    :param message: what is wrong with it.
    """

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        self.message = message
        super().__init__(f"Invalid value for {argument!r}: {message}")


class UnknownArgumentError(InvalidEmailError, TypeError):
    """An argument name that is not an email argument (``body=`` for ``text=``).

    Also a :exc:`TypeError`, as Python raises for an unknown keyword.

    :param argument: the unknown name.
    :param closest: the email argument it most likely meant, if any.
    """

    def __init__(self, argument: object, closest: str | None) -> None:
        hint = f" Did you mean {closest!r}?" if closest else ""
        self.closest = closest
        FlaskPostStackError.__init__(
            self, f"{argument!r} is not an email argument.{hint}"
        )
        self.argument = str(argument)
        self.message = f"is not an email argument.{hint}"


class RecipientNotAllowedError(InvalidEmailError):
    """A recipient is not matched by ``POSTSTACK_ALLOWED_RECIPIENTS``."""


class ConfigurationError(FlaskPostStackError, RuntimeError):
    """A ``POSTSTACK_*`` setting is missing or invalid.

    :param key: the configuration key, e.g. ``"POSTSTACK_API_KEY"``.
    :param message: what is wrong and how to fix it (never the key's value
        when the key is secret).
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class QueueUnavailableError(FlaskPostStackError, ConnectionError):
    """Redis failed during an enqueue: the email may or may not be queued.

    :attr:`may_have_been_queued` is ``False`` only when nothing reached
    Redis (the connection was refused, or timed out before anything was
    sent). After a read timeout or a connection lost mid-command, Redis may
    have run the write and a worker may send the email later: a fallback
    send must reuse :attr:`idempotency_key`, so that the API replays
    instead of sending twice.

    :param url: the Redis URL, with any password removed.
    :param reason: what Redis (or the connection) said.
    :param may_have_been_queued: whether the write may have reached Redis.
    :param idempotency_keys: the keys of the emails, in order.
    :param job_ids: the ids their jobs were given, in order.
    :param reading: the failure was in reading a job's status
        (``email_status``), not in queuing.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        may_have_been_queued: bool = True,
        idempotency_keys: Sequence[str] = (),
        job_ids: Sequence[str] = (),
        reading: bool = False,
    ) -> None:
        self.url = redact_url(url)
        self.reason = reason
        self.may_have_been_queued = may_have_been_queued
        #: The idempotency key of every email of the call, in order.
        self.idempotency_keys = list(idempotency_keys)
        #: The job id chosen for every job of the call, in order.
        self.job_ids = list(job_ids)
        count = len(self.idempotency_keys)
        what = "the email" if count <= 1 else f"the {count} emails"
        problem = "failed mid-command" if may_have_been_queued else "is unreachable"
        if may_have_been_queued:
            outcome = (
                f"{what[0].upper()}{what[1:]} may have been queued: send again"
                " only with the same idempotency_key."
            )
        else:
            outcome = "Nothing was queued."
        if reading:
            super().__init__(
                f"Could not read the status of {', '.join(self.job_ids)}:"
                f" Redis at {self.url} failed ({reason})."
            )
            return
        super().__init__(
            f"Could not queue {what}: Redis at {self.url} {problem}"
            f" ({reason}). {outcome}"
        )

    @property
    def idempotency_key(self) -> str | None:
        """The idempotency key of the (first) email, for a fallback send."""
        return self.idempotency_keys[0] if self.idempotency_keys else None

    @property
    def job_id(self) -> str | None:
        """The id the (first) job was given: look for it with ``Job.fetch``."""
        return self.job_ids[0] if self.job_ids else None


class SendCancelled(FlaskPostStackError):
    """Raise from a ``before_send`` receiver to cancel a send quietly."""


class WebhookVerificationError(FlaskPostStackError):
    """A webhook request failed its signature check."""


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``: the one in the
    authority (``user:pw@``) and a ``password=`` query parameter (redis-py
    reads both)."""
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        url = urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    base, mark, query = url.partition("?")
    if not mark:
        return url
    pairs = [
        (k, "***" if k.lower() == "password" else v)
        for k, v in parse_qsl(query, keep_blank_values=True)
    ]
    return f"{base}?{urlencode(pairs, safe='*')}"
