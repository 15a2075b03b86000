"""A local stand-in of the PostStack email API, for development and tests.

::

    from flask_poststack.sandbox import Sandbox

    with Sandbox() as sandbox:            # 127.0.0.1, a free port
        client = PostStack("sk_test_x", base_url=sandbox.base_url)
        client.emails.send({...})
        sandbox.emails[0].subject

See ``docs/sandbox.md`` for the routes, the admin API, the faults and the
choices made where the real API is not documented.
"""

from __future__ import annotations

import threading
import time
import typing as t

from .admin import Admin
from .api import Api
from .app import App
from .config import SandboxConfig
from .faults import Fault
from .faults import FaultRule
from .faults import Faults
from .faults import Holds
from .lifecycle import Lifecycle
from .lifecycle import Outcomes
from .lifecycle import Scheduler
from .server import Server
from .store import Store
from .store import StoredEmail
from .validation import Attachment
from .webhooks import Webhooks

__all__ = [
    "Attachment",
    "Fault",
    "FaultRule",
    "Faults",
    "Outcomes",
    "Sandbox",
    "SandboxConfig",
    "StoredEmail",
]


class Sandbox:
    """The sandbox server. Nothing listens until :meth:`start`.

    :param host: the address to bind; keep the default loopback address
        unless you mean to expose the sandbox.
    :param port: the port; ``0`` picks a free one (see :attr:`port`).
    :param latency: the API's response time in seconds, counted from the
        request's arrival and including the sandbox's own work.
    :param lifecycle_delay: seconds between an email's lifecycle steps.
    :param seed: seeds the RNG behind fault probabilities and jitter.
    :param settings: any other :class:`SandboxConfig` field.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        lifecycle_delay: float = 0.2,
        seed: int | None = None,
        **settings: t.Any,
    ) -> None:
        self.host = host
        self.port = port
        self.config = SandboxConfig()
        self.config.update(latency=latency, lifecycle_delay=lifecycle_delay, **settings)
        self._initial = self.config.copy()
        self._seed = seed
        self.store = Store(self.config.request_log_size)
        #: Fault rules, see :class:`Faults`.
        self.faults = Faults(seed)
        self._holds = Holds(lambda: self.store.count("requests_held"))
        #: Injected delivery outcomes, see :class:`Outcomes`.
        self.outcomes = Outcomes()
        self.scheduler = Scheduler()
        #: Registered webhooks and their deliveries.
        self.webhooks = Webhooks(self.config, self.store, self.scheduler)
        self.lifecycle = Lifecycle(
            self.store, self.config, self.scheduler, self.outcomes, self._announce
        )
        self._api = Api(self.config, self.store, self.lifecycle, self.webhooks)
        self._admin = Admin(self)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # Running --------------------------------------------------------------

    def start(self) -> Sandbox:
        """Bind and serve in a daemon thread; returns the sandbox."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        server = Server(
            (self.host, self.port), App(self), lambda: self.config.max_body_bytes
        )
        self.port = server.server_address[1]
        self._holds.open()
        self.scheduler.start()
        self.webhooks.start()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve (starting first if needed) until Ctrl-C, then stop."""
        if self._server is None:
            self.start()
        try:
            # Sleep, not join: a Ctrl-C inside Thread.join can leave the
            # thread looking alive, and stop()'s own join then waits it out.
            while self._thread is not None and self._thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and close every connection and background thread."""
        server, self._server = self._server, None
        self._holds.close()
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.scheduler.stop()
        self.webhooks.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port``: pass it to the SDK as ``base_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def inbox_url(self) -> str:
        return self.base_url + "/"

    # Settings -------------------------------------------------------------

    def configure(self, **settings: t.Any) -> None:
        """Change :class:`SandboxConfig` settings, e.g.
        ``configure(throttle_rate=5, latency=0.02)``."""
        self.config.update(**settings)

    def reset(self) -> None:
        """Forget all emails, keys, counters, logs, webhooks, faults and
        outcomes, release every held request, and restore the settings the
        sandbox was created with."""
        self.scheduler.clear()
        self.faults.clear()
        self._holds.release()
        self.faults.seed(self._seed)
        self.outcomes.clear()
        self.webhooks.reset()
        self.store.reset()
        for name, value in self._initial.as_dict().items():
            if name != "webhook_envelope":
                setattr(self.config, name, value)
        self.config.webhook_envelope = self._initial.webhook_envelope

    # Inspection -----------------------------------------------------------

    @property
    def emails(self) -> list[StoredEmail]:
        """Every stored email, oldest first."""
        return self.store.all_emails()

    def get_email(self, email_id: str) -> StoredEmail:
        """The stored email with this ``em_`` id.

        :raises KeyError: if there is none.
        """
        email = self.store.find(email_id)
        if email is None:
            raise KeyError(email_id)
        return email

    @property
    def stats(self) -> dict[str, t.Any]:
        """Counters: ``requests``, ``emails_created``, ``replays``,
        ``faults_fired``, ``requests_held``, ``idempotency_key_attempts``,
        ``attempts_by_idempotency_key`` (at most
        ``idempotency_attempts_max_keys`` keys) and more."""
        return self.store.stats()

    @property
    def requests(self) -> list[dict[str, t.Any]]:
        """The API request log, oldest first (API keys appear only as
        ``sk_live_…`` / ``sk_test_…``)."""
        with self.store.lock:
            return list(self.store.log)

    @property
    def deliveries(self) -> list[dict[str, t.Any]]:
        """Webhook deliveries, oldest first, with the signature headers sent."""
        with self.webhooks.lock:
            return [
                {**d.to_dict(), "signatures": list(d.signatures), "error": d.error}
                for d in self.webhooks.list_deliveries()
            ]

    @property
    def held(self) -> list[dict[str, t.Any]]:
        """The requests whose answer a ``hold_after_store`` fault is holding
        now, oldest first: ``id`` (for :meth:`release`), ``method``, ``path``,
        ``request_id``, ``idempotency_key`` (the header), ``status`` and
        ``email_id`` of the answer held, ``seconds`` (the bound) and
        ``held_for``."""
        return [held.to_dict() for held in self._holds.held]

    def wait_held(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, t.Any]]:
        """Wait until at least ``count`` requests are held and return
        :attr:`held`.

        :raises TimeoutError: if fewer are held after ``timeout`` seconds.
        """
        return [held.to_dict() for held in self._holds.wait(count, timeout)]

    def release(self, hold_id: int | None = None) -> int:
        """Send the held answer of one request (its ``id`` in :attr:`held`),
        or of every held request; returns how many were released."""
        return self._holds.release(hold_id)

    def wait_for(
        self,
        predicate: t.Callable[[], object],
        timeout: float = 5.0,
        interval: float = 0.01,
    ) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def wait_for_status(
        self, email_id: str, *statuses: str, timeout: float = 5.0
    ) -> StoredEmail:
        """Wait until the email's status is one of ``statuses`` (default
        the final ones) and return it.

        :raises TimeoutError: if it does not get there in time.
        """
        wanted = statuses or (
            "delivered",
            "bounced",
            "complained",
            "deferred",
            "failed",
        )
        email = self.get_email(email_id)
        if not self.wait_for(lambda: email.status in wanted, timeout):
            raise TimeoutError(f"{email_id} is {email.status!r}, not one of {wanted}")
        return email

    def _announce(self, email: StoredEmail, event: dict[str, t.Any]) -> None:
        data: dict[str, t.Any] = {
            "email_id": email.id,
            "to": list(email.to),
            "from": email.input.from_address,
            "subject": email.subject,
            "tags": list(email.input.tags or []),
        }
        if event.get("metadata"):
            data["metadata"] = event["metadata"]
        self.webhooks.emit("email." + event["eventType"], data)

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<Sandbox {self.base_url} {state}>"
