"""``cancel_email`` for a Celery task, through the ledger.

Celery's own ``revoke()`` is a broadcast to the running workers, kept in
their memory: with no worker up it is lost, and the email is sent later. So
cancelling removes the task's ledger entry (a task without one does nothing
when a worker takes it: :func:`flask_poststack._celery_ledger.ended_before`)
and leaves a marker, by which the worker records the task as revoked again
after Celery's ``STARTED`` has overwritten it.
"""

from __future__ import annotations

import typing as t

from . import _celery_ledger as ledger

if t.TYPE_CHECKING:
    from ._state import AppState

__all__ = ["cancel_task"]

#: How long the marker stays.
_MARK_SECONDS = 7 * 24 * 3600
#: Remove the entry and leave the marker, in one step (a worker taking the
#: task in between would find neither); whether there was an entry.
_CANCEL = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], 1, 'EX', ARGV[2])
  return 1
end
return 0
"""


def cancel_task(state: AppState, task_id: str) -> tuple[bool, str, str]:
    """Cancel a Celery task: ``(done, where, message)`` of an
    :class:`~flask_poststack.EmailChange`."""
    from ._celery_queue import celery_app

    app = celery_app(state)
    found = ledger.for_app(app)
    if found is None:
        return (False, "unknown", "Cancelling needs a Redis broker.")
    keys = [found.key(ledger.LEDGER), found.key(ledger.ENTRIES),
            found.key(ledger.CANCELED + task_id)]  # fmt: skip
    removed = found.client.register_script(_CANCEL)(
        keys=keys, args=[task_id, _MARK_SECONDS]
    )
    result = app.AsyncResult(task_id)
    if not removed:
        said = {"SUCCESS": ("sent", "It was sent already."),
                "FAILURE": ("failed", "It failed; nothing to cancel."),
                "REVOKED": ("canceled", "It was cancelled already.")}  # fmt: skip
        where, message = said.get(result.state, ("unknown", "No such task."))
        return (False, where, message)
    if result.state == "STARTED":  # it passed its ledger check, or is about to
        taken = "A worker had taken it: it may be sent now, but not retried."
        return (False, "started", taken)
    app.backend.mark_as_revoked(task_id)
    return (True, "queue", "Cancelled before it was sent.")
