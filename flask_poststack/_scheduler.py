"""rq's scheduler process, made to stop when its worker dies.

rq's worker forks its scheduler (``--with-scheduler``) as a child process
that holds the queue's scheduler lock. If the worker is killed (SIGKILL,
OOM killer), rq's child runs on, orphaned: it keeps the lock, so a
restarted worker cannot take over scheduling, and when the orphan is then
stopped, every retry and delayed email waits for the lock to expire (61 s).

:class:`PostStackScheduler` checks, at each turn of its loop (every
``interval`` second), that its worker is still its parent. Once it is not,
it schedules nothing more and stops as rq's does on SIGTERM: it releases its
locks and deregisters at once, and exits after one more ``interval``. The
lock is thus free at most about one ``interval`` (1 s) plus a Redis round
trip after the worker's death.
"""

from __future__ import annotations

import os
import typing as t

from rq.scheduler import RQScheduler

if t.TYPE_CHECKING:
    from rq.worker import BaseWorker

__all__ = ["PostStackScheduler", "start_scheduler"]


class PostStackScheduler(RQScheduler):
    """rq's :class:`~rq.scheduler.RQScheduler`, whose process stops soon
    after the worker that forked it dies."""

    #: The pid of the process that started the scheduler process.
    parent_pid: int | None = None

    def start(self) -> t.Any:
        """Fork the scheduler process, remembering who its parent is."""
        self.parent_pid = os.getpid()
        return super().start()  # type: ignore[no-untyped-call]

    def parent_gone(self) -> bool:
        """True in the scheduler process once its worker has died; then it
        is asked to stop (at the top of its next loop)."""
        if self.parent_pid is None or os.getpid() == self.parent_pid:
            return False  # not the forked process (a burst worker's own pass)
        if os.getppid() == self.parent_pid:
            return False
        if not self._stop_requested:
            self.log.warning(
                "Scheduler [PID %s]: its worker (PID %s) is gone; stopping",
                os.getpid(),
                self.parent_pid,
            )
            self.request_stop()  # type: ignore[no-untyped-call]
            self.stop()  # type: ignore[no-untyped-call]  # the lock now
        return True

    # rq's loop calls both, in an order that differs between rq versions.
    def heartbeat(self) -> None:
        """rq's, unless the worker is gone: the lock is not renewed."""
        if not self.parent_gone():
            super().heartbeat()  # type: ignore[no-untyped-call]

    def enqueue_scheduled_jobs(self) -> None:
        """rq's, unless the worker is gone."""
        if not self.parent_gone():
            super().enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]


def start_scheduler(
    worker: BaseWorker,
    logging_level: t.Any,
    date_format: str,
    log_format: str,
) -> None:
    """What rq's ``Worker._start_scheduler`` does outside burst mode, with a
    :class:`PostStackScheduler`: take the lock, then fork the scheduler."""
    scheduler = PostStackScheduler(
        worker.queues,
        connection=worker.connection,
        logging_level=logging_level if logging_level is not None else worker.log.level,
        date_format=date_format,
        log_format=log_format,
        serializer=worker.serializer,
    )
    worker.scheduler = scheduler
    scheduler.acquire_locks()  # type: ignore[no-untyped-call]
    if scheduler.acquired_locks:
        scheduler.start()
