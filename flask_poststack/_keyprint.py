"""A job is sent only with the API key of the app that queued it.

Two apps that share a Redis and a queue name would otherwise send each
other's email: a test app's email would go out on a live key. Each job
carries a fingerprint of the queuing app's key in ``job.meta["poststack_key"]``:
the key's mode and a short keyed hash (``"test:1f0c9a3b7e21"``). It is not
secret: 48 bits of an HMAC cannot be turned back into the key. The worker
refuses a job whose fingerprint is not its own key's, for good (a retry
cannot help). A job without one (queued by an older version, or by an app
that has no key of its own) is sent with the worker's key, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import typing as t

from .config import is_api_key
from .errors import ConfigurationError

__all__ = ["META_KEY", "check_key", "fingerprint", "key_meta"]

#: Where the fingerprint is kept in ``job.meta``.
META_KEY = "poststack_key"
_LABEL = b"flask-poststack job key fingerprint v1"


def fingerprint(api_key: str | None) -> str | None:
    """``"<mode>:<12 hex>"`` for a PostStack key, ``None`` for no valid key."""
    if api_key is None or not is_api_key(api_key):
        return None
    mode = "test" if api_key.startswith("sk_test_") else "live"
    digest = hmac.new(_LABEL, api_key.encode(), hashlib.sha256).hexdigest()
    return f"{mode}:{digest[:12]}"


def key_meta(api_key: str | None) -> dict[str, str]:
    """The job meta that records which key may send the job."""
    print_ = fingerprint(api_key)
    return {} if print_ is None else {META_KEY: print_}


def check_key(job: t.Any, api_key: str | None) -> None:
    """Refuse to send ``job`` with ``api_key`` when it was queued with another key.

    :raises ConfigurationError: naming both fingerprints, the queue and
        ``POSTSTACK_QUEUE``; never the key.
    """
    meta = getattr(job, "meta", None) or {}
    expected = meta.get(META_KEY)
    own = fingerprint(api_key)
    if not isinstance(expected, str) or own is None or expected == own:
        return
    queued_mode, _, _ = expected.partition(":")
    own_mode, _, _ = own.partition(":")
    queue = getattr(job, "origin", None) or "?"
    raise ConfigurationError(
        "POSTSTACK_API_KEY",
        f"job {getattr(job, 'id', '?')} on queue {queue!r} was queued by an app"
        f" with a {queued_mode} key ({expected}), but this worker has a"
        f" {own_mode} key ({own}); it is not sent with another app's key."
        " Either the app and this worker have different POSTSTACK_API_KEY"
        " values (give the worker the app's key), or two apps share this Redis"
        " and queue: give each its own POSTSTACK_QUEUE, and run a worker with"
        " each app's key on its queue.",
    )
