"""``POST /emails/preview`` and ``POST /emails/spam-preview``.

The real API runs a spam filter; the sandbox scores a draft with a few plain
rules so that a preview has something honest to show. The score is not the
real filter's and is documented as such.
"""

from __future__ import annotations

import re
import typing as t

from .validation import InvalidRequest

REJECT_AT = 6.0
FLAG_AT = 3.0
_MONEY = re.compile(r"\b(free money|winner|prize)\b|\$\$\$", re.IGNORECASE)


def _symbols(subject: str, html: str, text: str) -> list[tuple[str, float, str]]:
    found = []
    if len(subject) > 5 and subject.isupper():
        found.append(("SUBJ_ALL_CAPS", 1.5, "Subject is all capitals"))
    if subject.count("!") >= 2:
        found.append(("SUBJ_EXCLAIM", 0.8, "Subject has several exclamation marks"))
    if _MONEY.search(f"{subject} {html} {text}"):
        found.append(("FREE_MONEY", 2.0, "Mentions free money or prizes"))
    if html and not text:
        found.append(("HTML_ONLY", 0.7, "HTML body without a text part"))
    if not html and not text:
        found.append(("EMPTY_BODY", 2.5, "No body"))
    if not subject:
        found.append(("MISSING_SUBJECT", 1.0, "No subject"))
    return found


def spam_report(subject: str, html: str, text: str) -> dict[str, t.Any]:
    """The ``{score, action, symbols, skipped}`` report for a draft."""
    symbols = _symbols(subject, html, text)
    score = round(sum(points for _, points, _ in symbols), 2)
    if score >= REJECT_AT:
        action = "reject"
    elif score >= FLAG_AT:
        action = "add header"
    else:
        action = "no action"
    return {
        "score": score,
        "action": action,
        "symbols": [
            {"name": name, "score": points, "description": description}
            for name, points, description in symbols
        ],
        "skipped": False,
    }


def draft(body: t.Any) -> tuple[str, str, str]:
    """Check a preview request; return its subject, html and text."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    if not isinstance(body.get("from"), str) or not body["from"].strip():
        raise InvalidRequest("'from' is required")
    to = body.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not 1 <= len(to) <= 5:
        raise InvalidRequest("'to' must be a list of 1 to 5 addresses")
    fields = [body.get(name) for name in ("subject", "html", "text")]
    if any(value is not None and not isinstance(value, str) for value in fields):
        raise InvalidRequest("'subject', 'html' and 'text' must be strings")
    subject, html, text = (value or "" for value in fields)
    return subject, html, text


def render_variables(value: str, variables: t.Mapping[str, t.Any]) -> str:
    """Fill ``{{name}}`` placeholders, as server-side templates do."""
    return re.sub(
        r"\{\{\s*(\w+)\s*\}\}", lambda m: str(variables.get(m.group(1), "")), value
    )


def preview(body: t.Any) -> dict[str, t.Any]:
    """The response of ``POST /emails/preview``."""
    subject, html, text = draft(body)
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidRequest("'variables' must be an object")
    subject, html, text = (
        render_variables(v, variables) for v in (subject, html, text)
    )
    warnings = []
    if html and not text:
        warnings.append(
            {
                "code": "missing_text_part",
                "severity": "info",
                "message": "Add a text part for clients that do not show HTML.",
            }
        )
    return {
        "rendered_subject": subject,
        "rendered_html": html,
        "rendered_text": text,
        "size": {"html_bytes": len(html.encode()), "text_bytes": len(text.encode())},
        "spam": spam_report(subject, html, text),
        "warnings": warnings,
    }
