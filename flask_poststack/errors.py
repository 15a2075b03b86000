"""Exceptions raised by Flask-PostStack.

::

    FlaskPostStackError(Exception)
    ├── InvalidEmailError(ValueError)          bad input; .argument names it
    │   ├── UnknownArgumentError(TypeError)    not an email argument; .closest
    │   └── RecipientNotAllowedError           outside POSTSTACK_ALLOWED_RECIPIENTS
    ├── ConfigurationError(RuntimeError)       bad config; .key names it
    ├── QueueUnavailableError(ConnectionError) Redis unreachable; .url (no password)
    ├── SendCancelled                          raised by a before_send receiver
    └── WebhookVerificationError               a webhook failed its signature check

    poststack.PostStackError                   API errors, re-raised unchanged

No message or repr here ever contains the API key.
"""

from __future__ import annotations

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
    """Redis could not be reached, so the email was not queued.

    :param url: the Redis URL, with any password removed.
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = redact_url(url)
        self.reason = reason
        super().__init__(
            f"Could not queue the email: Redis at {self.url} is unreachable"
            f" ({reason}). Nothing was queued."
        )


class SendCancelled(FlaskPostStackError):
    """Raise from a ``before_send`` receiver to cancel a send quietly."""


class WebhookVerificationError(FlaskPostStackError):
    """A webhook request failed its signature check."""


def redact_url(url: str) -> str:
    """Return ``url`` with the password (if any) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
