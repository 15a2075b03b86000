"""Render an email's Jinja templates with the current app's environment."""

from __future__ import annotations

import collections.abc as cabc
import typing as t

import flask
from jinja2 import TemplateNotFound

from .errors import InvalidEmailError

#: Suffixes looked up for ``template="emails/welcome"``, in this order.
SUFFIXES = (".subject.txt", ".html", ".txt")


class Rendered(t.NamedTuple):
    subject: str | None
    html: str | None
    text: str | None


def render_email(template: object, context: object) -> Rendered:
    """Render whichever of ``<template>.subject.txt``, ``.html`` and ``.txt``
    exist, with Flask's context processors and autoescaping (``.html`` only).

    A missing template is an :exc:`InvalidEmailError`; an error raised while
    rendering one that exists is a bug in the template and propagates.
    """
    if not isinstance(template, str) or not template.strip():
        raise InvalidEmailError("template", "must be a non-empty template name.")
    for suffix in SUFFIXES:
        if template.endswith(suffix):
            raise InvalidEmailError(
                "template",
                f"give the name without a suffix ({template[: -len(suffix)]!r});"
                " the .html, .txt and .subject.txt files are looked up.",
            )
    values = _check_context(context)
    if not flask.has_app_context():
        raise RuntimeError(
            "Rendering an email template needs an app context. Call this"
            " inside 'with app.app_context():' or a request."
        )
    env = flask.current_app.jinja_env
    found: dict[str, t.Any] = {}
    for suffix in SUFFIXES:
        try:
            found[suffix] = env.get_template(template + suffix)
        except TemplateNotFound as e:
            # A file that exists but is missing something else is a real error.
            if e.name != template + suffix:
                raise
    if ".html" not in found and ".txt" not in found:
        raise InvalidEmailError(
            "template",
            f"neither {template}.html nor {template}.txt exists in the app's"
            " template folders.",
        )
    rendered = {
        suffix: flask.render_template(tmpl, **values) for suffix, tmpl in found.items()
    }
    subject = rendered.get(".subject.txt")
    if subject is not None:
        subject = " ".join(subject.split()) or None
    return Rendered(subject, rendered.get(".html"), rendered.get(".txt"))


def _check_context(context: object) -> dict[str, t.Any]:
    if context is None:
        return {}
    if not isinstance(context, cabc.Mapping) or not all(
        isinstance(key, str) for key in context
    ):
        raise InvalidEmailError("context", "must be a dict with string keys.")
    if "template_name_or_list" in context:
        # flask.render_template() takes its template under this name.
        raise InvalidEmailError(
            "context", "the key 'template_name_or_list' is reserved by Flask."
        )
    return dict(context)
