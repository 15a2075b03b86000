"""Render an email's Jinja templates with the current app's environment."""

from __future__ import annotations

import collections.abc as cabc
import contextlib
import importlib
import typing as t
import weakref

import flask
from jinja2 import Environment
from jinja2 import TemplateNotFound

from ._optional import missing_extra
from .errors import InvalidEmailError

#: Suffixes looked up for ``template="emails/welcome"``, in this order.
SUFFIXES = (".subject.txt", ".html", ".txt")


class Rendered(t.NamedTuple):
    subject: str | None
    html: str | None
    text: str | None


def render_email(
    template: object,
    context: object,
    locale: object = None,
    *,
    text_from_html: bool = False,
    inline_css: bool = False,
) -> Rendered:
    """Render whichever of ``<template>.subject.txt``, ``.html`` and ``.txt``
    exist, with Flask's context processors and autoescaping (``.html`` only);
    under Flask-Babel's ``force_locale(locale)`` when ``locale`` is given.

    :param text_from_html: without a ``.txt``, make the text from the HTML.
    :param inline_css: move the HTML's ``<style>`` rules into ``style``
        attributes.

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
    env: Environment = flask.current_app.jinja_env
    with _forced_locale(locale):
        if isinstance(locale, str):
            env = _locale_env(env, locale)
        found: dict[str, t.Any] = {}
        for suffix in SUFFIXES:
            try:
                found[suffix] = env.get_template(template + suffix)
            except TemplateNotFound as e:
                # A file that exists but is missing something else is a real
                # error.
                if e.name != template + suffix:
                    raise
        if ".html" not in found and ".txt" not in found:
            raise InvalidEmailError(
                "template",
                f"neither {template}.html nor {template}.txt exists in the"
                " app's template folders.",
            )
        rendered = {
            suffix: flask.render_template(tmpl, **values)
            for suffix, tmpl in found.items()
        }
    subject = rendered.get(".subject.txt")
    if subject is not None:
        subject = " ".join(subject.split()) or None
    html, text = rendered.get(".html"), rendered.get(".txt")
    if text is None and html is not None and text_from_html:
        text = html_to_text(html)
    if html is not None and inline_css:
        html = inline_styles(html)
    return Rendered(subject, html, text)


def html_to_text(html: str) -> str:
    """The text of ``html``, with each link's URL after its text
    (``[reset your password](https://...)``), by inscriptis."""
    try:
        from inscriptis import get_text
        from inscriptis.model.config import ParserConfig
    except ImportError:
        raise missing_extra("POSTSTACK_TEXT_FROM_HTML", "inscriptis", "text") from None
    text: str = get_text(html, ParserConfig(display_links=True))
    return text.strip()


def inline_styles(html: str) -> str:
    """``html`` with its ``<style>`` rules in ``style`` attributes, by
    css-inline; ``@media`` rules stay in a ``<style>``, and no remote
    stylesheet is fetched."""
    try:
        import css_inline
    except ImportError:
        raise missing_extra("POSTSTACK_INLINE_CSS", "css-inline", "css") from None
    inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
    inlined: str = inliner.inline(html)
    return inlined


def check_locale(locale: object) -> t.ContextManager[object]:
    """Flask-Babel's ``force_locale(locale)``, once ``locale`` is known to
    be a locale and the app to use Flask-Babel."""
    if not isinstance(locale, str) or not locale.strip():
        raise InvalidEmailError("locale", "must be a locale name such as 'de'.")
    try:
        flask_babel: t.Any = importlib.import_module("flask_babel")
        from babel import Locale
        from babel import UnknownLocaleError
    except ImportError:
        flask_babel = None
    if flask_babel is None or "babel" not in flask.current_app.extensions:
        raise InvalidEmailError(
            "locale",
            "needs Flask-Babel set up in the app (pip install"
            " 'flask-poststack[babel]', then Babel(app)); without it the"
            " templates cannot be rendered in another locale.",
        )
    try:
        Locale.parse(locale.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        reason = f"{locale!r} is not a known locale."
        raise InvalidEmailError("locale", reason) from None
    manager: t.ContextManager[object] = flask_babel.force_locale(
        locale.replace("-", "_")
    )
    return manager


#: Each app environment's twin per locale, each with its own cache.
_BY_LOCALE: weakref.WeakKeyDictionary[Environment, dict[str, Environment]] = (
    weakref.WeakKeyDictionary()
)


def _locale_env(env: Environment, locale: str) -> Environment:
    # Jinja evaluates a filter of a literal ({{ 1234.5|decimalformat }}) when
    # it compiles, even unoptimized, so a template compiled (and cached)
    # under one locale keeps that locale's formats: an email with a locale is
    # compiled under it, in that locale's own cache.
    twins = _BY_LOCALE.setdefault(env, {})
    if locale not in twins:
        twins[locale] = env.overlay(cache_size=400)
    return twins[locale]


def _forced_locale(locale: object) -> t.ContextManager[object]:
    if locale is None:
        return contextlib.nullcontext()
    return check_locale(locale)


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


def undefined_variables(
    template: str, context: t.Mapping[str, t.Any]
) -> list[tuple[str, list[str]]]:
    """For each file of ``template``, the variables it (or a template it
    includes or extends) reads that neither ``context``, the Jinja globals
    nor the app's context processors define."""
    from jinja2 import meta
    from jinja2 import TemplateError

    app = flask.current_app
    env = app.jinja_env
    known = set(env.globals) | set(context)
    processed: dict[str, t.Any] = {}
    with contextlib.suppress(Exception):  # a processor that needs a request
        app.update_template_context(processed)
    known |= set(processed)
    loader = env.loader
    found = []
    for suffix in SUFFIXES:
        top = template + suffix
        seen: set[str] = set()
        todo, missing = [top], set()
        while todo and len(seen) < 100:
            name = todo.pop()
            if name in seen or loader is None:
                continue
            seen.add(name)
            try:
                source = loader.get_source(env, name)[0]
                tree = env.parse(source)
            except (TemplateError, ValueError):
                continue
            missing |= meta.find_undeclared_variables(tree)
            todo.extend(n for n in meta.find_referenced_templates(tree) if n)
        missing -= known
        if missing:
            found.append((top, sorted(missing)))
    return found
