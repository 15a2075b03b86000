from __future__ import annotations

import os


class Config:
    SECRET_KEY = "dev"
    # Flask-Mail's SMTP settings: no longer used, harmless to keep.
    MAIL_SERVER = os.environ.get("MAIL_SERVER", "smtp.example.com")
    MAIL_PORT = 587
    MAIL_USE_TLS = True
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_DEFAULT_SENDER = ("Microblog", "noreply@microblog.test")
    ADMINS = ["admin@microblog.test"]
    # The one new setting.
    POSTSTACK_API_KEY = os.environ.get("POSTSTACK_API_KEY")


class TestConfig(Config):
    TESTING = True
