"""A small app that used Flask-Mail, moved to Flask-PostStack.

What changed, and all that changed: in ``app.py`` the import
``from flask_mail import Mail, Message`` became
``from flask_poststack.flask_mail import Mail, Message`` (and likewise for
``email_dispatched``), and ``config.py`` gained ``POSTSTACK_API_KEY``. The
views, the thread that sends, and ``test_app.py`` are as they were under
Flask-Mail.
"""
