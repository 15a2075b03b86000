"""The optional libraries behind a setting, and the error naming their extra."""

from __future__ import annotations

import importlib.util

from .errors import ConfigurationError

__all__ = ["missing_extra", "require_engine"]


def missing_extra(key: str, package: str, extra: str) -> ConfigurationError:
    """The error for ``key``, which needs ``package`` from ``extra``."""
    return ConfigurationError(
        key, f"needs {package}: pip install 'flask-poststack[{extra}]'."
    )


def require_engine(queue_backend: str) -> None:
    """Fail at ``init_app``, not at the first enqueue, when the queue engine
    is not installed.

    :raises ConfigurationError: naming ``POSTSTACK_QUEUE_BACKEND`` and the extra.
    """
    if queue_backend == "celery" and importlib.util.find_spec("celery") is None:
        raise missing_extra("POSTSTACK_QUEUE_BACKEND", "celery", "celery")
