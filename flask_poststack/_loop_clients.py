"""One ``poststack.AsyncPostStack`` per event loop, for one app.

An async client's connection pool belongs to the loop it was first used on:
using it from another loop fails or hangs. Flask runs each ``async def``
view in an event loop of its own (``asyncio.run`` through asgiref), Quart
and other ASGI servers run one loop for the process. So each loop gets its
own client, reused for the loop's life and closed when the loop shuts down:
``asyncio.run`` closes every async generator before it closes the loop, and
one suspended generator per client does the closing.
"""

from __future__ import annotations

import asyncio
import threading
import typing as t
import weakref

import poststack

from .client import ClientSlot
from .config import check_api_key
from .config import Settings


class LoopClients:
    """The async clients of one app, one per running event loop."""

    def __init__(self, slot: ClientSlot) -> None:
        self._slot = slot
        self._lock = threading.Lock()
        # The loop is the key, weakly: a loop that is gone drops its client.
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[poststack.AsyncPostStack, t.AsyncGenerator[None, None]],
        ] = weakref.WeakKeyDictionary()

    async def for_send(self) -> poststack.AsyncPostStack:
        """The running loop's client; built, and tied to the loop's
        shutdown, on first use.

        :raises ConfigurationError: naming ``POSTSTACK_API_KEY`` when it is
            missing or malformed.
        """
        self._slot.for_send()  # checks the key
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.get(loop)
        if entry is not None:
            return entry[0]
        client = make_async_client(self._slot.settings)
        closer = _close_at_shutdown(client)
        # Started here, so the loop tracks it; the entry holds it, so that
        # it is closed at shutdown and not collected (and closed) before.
        await closer.__anext__()
        with self._lock:
            self._clients[loop] = (client, closer)
        return client

    def count(self) -> int:
        """How many loops have a client now (for tests)."""
        with self._lock:
            return len(self._clients)


def make_async_client(settings: Settings) -> poststack.AsyncPostStack:
    """A new async SDK client for ``settings`` (the key checked)."""
    return poststack.AsyncPostStack(
        api_key=check_api_key(settings.api_key),
        base_url=settings.base_url,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )


async def _close_at_shutdown(
    client: poststack.AsyncPostStack,
) -> t.AsyncGenerator[None, None]:
    try:
        yield
        yield  # never resumed: only closed, by the loop's shutdown
    finally:
        await client.aclose()
