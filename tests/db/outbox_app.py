"""A sign-up app on the outbox, run as a real process by test_outbox_e2e.py.

``python -m tests.db.outbox_app signup N [--kill-at-commit | --stop-redis-at K]``
creates N users, each with its welcome email, one transaction each.
``--kill-at-commit`` SIGKILLs the process right after its first commit,
before the push. ``--stop-redis-at K`` stops the Redis server (pid
``$C18_REDIS_PID``) right after the K-th commit (from 1), before its push, and
goes on. The database is ``$C18_DB_URL``; ``POSTSTACK_*`` come from the
environment.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import typing as t

from flask import Flask
from sqlalchemy import event

from flask_poststack import enqueue_email
from flask_poststack import PostStack
from tests.db.conftest import make_db
from tests.db.conftest import wal


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["C18_DB_URL"]
    db, user = make_db()
    db.init_app(app)
    PostStack(app)
    app.extensions["c18"] = (db, user)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", wal)
        db.create_all()
    return app


def stop_redis() -> None:
    """SIGTERM the Redis server; return once its port refuses connections."""
    os.kill(int(os.environ["C18_REDIS_PID"]), signal.SIGTERM)
    port = int(os.environ["POSTSTACK_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            return
        time.sleep(0.02)
    sys.exit("Redis did not stop")


def signup(count: int, kill_at_commit: bool, stop_redis_at: int = 0) -> None:
    app = create_app()
    db, user = app.extensions["c18"]
    commits = 0

    def after_commit(session: t.Any) -> None:
        # Runs before Flask-PostStack's push (after_transaction_end).
        nonlocal commits
        commits += 1
        if kill_at_commit:
            os.kill(os.getpid(), signal.SIGKILL)
        if commits == stop_redis_at:
            stop_redis()

    with app.app_context():
        event.listen(db.session(), "after_commit", after_commit)
        for i in range(count):
            db.session.add(user(email=f"user{i}@example.com"))
            enqueue_email(to=f"user{i}@example.com", subject="Welcome", text="Hi")
            db.session.commit()
    print("done", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    at = sys.argv.index("--stop-redis-at") + 1 if "--stop-redis-at" in sys.argv else 0
    stop_at = int(sys.argv[at]) if at else 0
    signup(int(sys.argv[2]), "--kill-at-commit" in sys.argv, stop_at)
