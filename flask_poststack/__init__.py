"""Flask-PostStack: transactional email for Flask through the PostStack API."""

from __future__ import annotations

__all__: list[str] = []
