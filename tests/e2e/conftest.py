"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest

from tests.e2e.harness import Workers


@pytest.fixture
def workers(tmp_path: Path) -> t.Iterator[Workers]:
    """Worker subprocesses for the test, all stopped after it."""
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.close()
