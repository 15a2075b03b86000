"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql``
package (``make postgresql`` installs it), a cluster in a temporary
directory, listening on 127.0.0.1 on a free port.

PostgreSQL refuses to run as root; as root (CI), the server runs as the
``postgres`` user that the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import typing as t
import uuid
from pathlib import Path

from flask_poststack.redis_server import free_port

__all__ = ["PostgresServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or ``None``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """``start()`` a cluster with ``trust`` authentication (loopback only);
    ``create_database()`` gives each test its own database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="poststack-pg-"))
        self._as_postgres = os.geteuid() == 0

    def _run(self, *argv: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        result = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> PostgresServer:
        if self._as_postgres:
            shutil.chown(self.directory, "postgres")
        data = self.directory / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-A", "trust",
            "-U", "postgres", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.directory / "server.log"), "-w", "-t", "120", "start",
        )  # fmt: skip
        return self

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.directory / "data"),
                "-m", "immediate", "-w", "stop",
            )  # fmt: skip
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()
