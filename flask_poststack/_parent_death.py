"""Child processes that do not outlive the process that started them.

``flask poststack dev`` starts a redis-server and a worker. If ``dev`` is
killed (SIGKILL, a closed terminal's SIGHUP after SIGKILL, the OOM killer)
it cannot stop them, and they would run on as orphans holding its ports.
On Linux, the kernel can signal a child when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); the setting survives the child's ``exec``.
Elsewhere there is no such setting and :func:`parent_death_signal` gives
``None``: there, only a ``dev`` that is stopped (Ctrl-C, SIGTERM) stops
its children.
"""

from __future__ import annotations

import ctypes
import os
import sys
import typing as t

__all__ = ["parent_death_signal"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def parent_death_signal(sig: int) -> t.Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that has the child
    sent ``sig`` when this process dies; ``None`` where that is not
    possible (not Linux, or no ``prctl``).

    Linux sends the signal when the *thread* that started the child ends,
    so start such children from the main thread. Everything that could
    import is done here, before the fork: the child only makes system calls.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong, ctypes.c_ulong]  # fmt: skip
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    args = (_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    def in_child() -> None:
        prctl(*args)
        # The parent may have died between the fork and the prctl: then
        # the signal never comes, and the child must not run on.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return in_child
