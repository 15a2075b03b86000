"""What a send returns: :class:`SendResult` for one email, :class:`BatchItem`
for each email of a batch."""

from __future__ import annotations

import dataclasses
import secrets
import typing as t
from collections.abc import Mapping

__all__ = ["BatchItem", "SendResult"]


@dataclasses.dataclass(frozen=True)
class SendResult:
    """What the API answered to one send."""

    #: The email's id, ``"em_..."``. Suppressed sends get ``"em_suppressed_..."``.
    id: str
    #: True when the idempotency key matched an earlier send: nothing new was sent.
    replayed: bool = False
    #: True when the API key was a test key (``sk_test_...``).
    test_mode: bool = False
    #: True when sending was suppressed and nothing went on the network.
    suppressed: bool = False
    #: The API's response body, as the SDK returned it.
    response: Mapping[str, t.Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_response(cls, response: Mapping[str, t.Any]) -> SendResult:
        """Build a result from a ``POST /emails`` response body."""
        return cls(
            id=str(response["id"]),
            replayed=bool(response.get("replayed", False)),
            test_mode=bool(response.get("test_mode", False)),
            response=dict(response),
        )

    @classmethod
    def suppressed_result(cls) -> SendResult:
        """A result for a send that was captured instead of sent."""
        fake_id = f"em_suppressed_{secrets.token_hex(8)}"
        return cls(id=fake_id, suppressed=True, response={"id": fake_id})


@dataclasses.dataclass(frozen=True)
class BatchItem:
    """The outcome of one email of a batch, in input order."""

    #: The email's position in the ``messages`` given.
    index: int
    #: Its idempotency key: resend with it and the API won't send it twice.
    idempotency_key: str
    #: The email's id when the API accepted it.
    id: str | None = None
    #: True when the key matched an earlier send.
    replayed: bool = False
    #: Why it was refused, and the API's code (e.g. a quota code).
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the API accepted this email."""
        return self.id is not None

    @classmethod
    def from_answer(
        cls, index: int, key: str, answer: Mapping[str, t.Any]
    ) -> BatchItem:
        """The item for one element of a batch answer."""
        if "id" in answer:
            return cls(index, key, id=str(answer["id"]),
                       replayed=bool(answer.get("replayed")))  # fmt: skip
        return cls(index, key, error=str(answer.get("error")), code=answer.get("code"))
