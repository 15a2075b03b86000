"""The one rule for display names in address fields.

The API takes ``from``, ``to``, ``cc``, ``bcc`` and ``reply_to`` as "a bare
address or ``"Name <addr>"``" and stores the two parts of ``from`` as
``fromAddress`` and ``fromName``. It defines no escaping inside the name, so a
name is stored as written between its quotes. This module is that rule, and
the only copy of it: :mod:`flask_poststack._fields` (what the extension lets
through) and :mod:`flask_poststack.sandbox.validation` (what the stand-in API
accepts) both call :func:`split_address`, so they cannot drift apart.

The rule (docs/sending.md, "Addresses", says the same):

* A value that does not end with ``>`` is a bare address, with no name.
* Otherwise the address is what sits between the last ``<`` and the final
  ``>``, and the display name is everything before that ``<``, with
  surrounding spaces removed. An empty name is no name.
* The name may be wrapped in one pair of double quotes, which are not part of
  it.
* The name must not contain ``"``, ``\\``, ``<``, ``>`` or control characters,
  quoted or not: the API has no escapes, so ``\\"`` cannot stand for a quote,
  and an RFC 5322 reader would drop a lone ``\\`` that the API keeps.
* An unquoted name must also not contain ``( ) , ; : @ [ ]``: in a mail
  header those start a comment, separate addresses, start a group or a domain,
  so the name would be read as something else. Quote it instead:
  ``"Lovelace, Ada" <ada@example.com>``.

Only the name is checked here; each side checks the bare address itself.
"""

from __future__ import annotations

import re

#: Never in a display name, quoted or not.
_FORBIDDEN = re.compile(r"[\"\\<>\x00-\x1f\x7f\x85\u2028\u2029]")
#: Not in an unquoted display name (RFC 5322 specials but ``.``, ``"``, ``\``,
#: ``<`` and ``>``, which are covered above or harmless).
_UNQUOTED_SPECIALS = re.compile(r"[(),;:@\[\]]")


class DisplayNameError(ValueError):
    """A display name the rule refuses; ``str()`` says why."""


def split_address(value: str) -> tuple[str, str | None]:
    """Split an address field into ``(bare address, display name or None)``.

    ``"Ada <ada@example.com>"`` gives ``("ada@example.com", "Ada")`` and
    ``"ada@example.com"`` gives ``("ada@example.com", None)``. The bare
    address is returned unchecked.

    :raises DisplayNameError: when the display name breaks the rule.
    """
    written = value.strip()
    if not written.endswith(">") or "<" not in written:
        return written, None
    cut = written.rindex("<")
    bare = written[cut + 1 : -1].strip(" ")
    # Spaces only: str.strip() would also eat controls such as "\x1f".
    name = written[:cut].strip(" ")
    quoted = len(name) >= 2 and name.startswith('"') and name.endswith('"')
    if quoted:
        name = name[1:-1]
    bad = _FORBIDDEN.search(name)
    if bad is None and not quoted:
        bad = _UNQUOTED_SPECIALS.search(name)
        if bad is not None:
            raise DisplayNameError(
                f"the display name must be in double quotes to contain {bad.group()!r}."
            )
    if bad is not None:
        raise DisplayNameError(
            f"the display name must not contain {bad.group()!r}"
            " (no double quotes, backslashes, angle brackets or control"
            " characters in a name, quoted or not)."
        )
    name = name.strip(" ")
    return bare, name or None
