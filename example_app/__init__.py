"""An example Flask app that sends its email with Flask-PostStack.

- :mod:`example_app.auth`: a sign-up form that queues a welcome email
  (``enqueue_email``, sent by an RQ worker);
- :mod:`example_app.billing`: a receipt with a PDF attachment, sent at once
  (``send_email``), with the API's errors shown as a friendly message;
- :mod:`example_app.support`: a contact form still written the Flask-Mail
  way (``Message`` + ``mail.send``), through ``flask_poststack.flask_mail``;
- :mod:`example_app.tracking`: the webhook receivers that record what became
  of each email, and the ``/emails`` page that shows it;
- :mod:`example_app.previews`: previews of those emails, in debug mode;
- :mod:`example_app.store`: users, sent emails and their statuses, in a
  SQLite file (Flask-SQLAlchemy), with Flask-PostStack's outbox table.

Run it with ``make demo KEEP=1``, or see ``docs/example.md``.
"""

from __future__ import annotations

import typing as t

from flask import Flask
from flask import render_template

from flask_poststack import PostStack

from . import store

poststack = PostStack()


def create_app(test_config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Build the example app.

    Configuration comes from the environment: ``FLASK_*`` variables through
    ``app.config.from_prefixed_env()`` (``FLASK_SECRET_KEY``...), and
    ``POSTSTACK_*`` ones, which Flask-PostStack reads from the environment
    when ``app.config`` lacks them. ``flask run`` loads a ``.env`` file first
    when python-dotenv is installed. ``test_config`` overrides all of it.
    """
    app = Flask(__name__)
    # Defaults for non-POSTSTACK keys only: a POSTSTACK_* key set here would
    # hide the environment variable of the same name.
    app.config.from_mapping(
        SECRET_KEY="dev",  # override with FLASK_SECRET_KEY outside development
        SITE_NAME="Acme",
        SUPPORT_ADDRESS="support@example.com",
        # In the instance folder; FLASK_SQLALCHEMY_DATABASE_URI changes it.
        SQLALCHEMY_DATABASE_URI="sqlite:///example_app.db",
    )
    app.config.from_prefixed_env()
    # Not a deployment choice but how the views are written: each queued
    # email is an outbox row of the view's transaction, sent once it commits
    # (docs/transactions.md).
    app.config["POSTSTACK_OUTBOX"] = "sqlalchemy"
    if test_config:
        app.config.update(test_config)

    # Registers the webhook endpoint too, when POSTSTACK_WEBHOOK_SECRET is set.
    store.init_app(app)
    poststack.init_app(app)

    from . import auth
    from . import billing
    from . import previews  # noqa: F401  (registers the email previews)
    from . import support
    from . import tracking

    support.mail.init_app(app)

    app.register_blueprint(auth.bp)
    app.register_blueprint(billing.bp)
    app.register_blueprint(support.bp)
    app.register_blueprint(tracking.bp)
    tracking.connect_receivers(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    return app
