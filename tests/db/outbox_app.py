"""A sign-up app on the outbox, run as a real process by test_outbox_e2e.py.

``python -m tests.db.outbox_app signup N [--kill-at-commit]`` creates N users,
each with its welcome email, one transaction each. ``--kill-at-commit``
SIGKILLs the process right after its first commit, before the push. The
database is ``$C18_DB``; ``POSTSTACK_*`` come from the environment.
"""

from __future__ import annotations

import os
import signal
import sys

from flask import Flask
from sqlalchemy import event

from flask_poststack import enqueue_email
from flask_poststack import PostStack
from tests.db.conftest import make_db
from tests.db.conftest import wal


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{os.environ['C18_DB']}"
    db, user = make_db()
    db.init_app(app)
    PostStack(app)
    app.extensions["c18"] = (db, user)
    with app.app_context():
        event.listen(db.engine, "connect", wal)
        db.create_all()
    return app


def signup(count: int, kill_at_commit: bool) -> None:
    app = create_app()
    db, user = app.extensions["c18"]
    with app.app_context():
        if kill_at_commit:
            # Runs before Flask-PostStack's push (after_transaction_end).
            event.listen(
                db.session(), "after_commit", lambda s: os.kill(os.getpid(), 9)
            )
        for i in range(count):
            db.session.add(user(email=f"user{i}@example.com"))
            enqueue_email(to=f"user{i}@example.com", subject="Welcome", text="Hi")
            db.session.commit()
    print("done", flush=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signup(int(sys.argv[2]), "--kill-at-commit" in sys.argv)
