"""Turn the ``attachments`` argument into the wire form of ``POST /emails``."""

from __future__ import annotations

import base64
import collections.abc as cabc
import dataclasses
import io
import mimetypes
import os
import re
import stat
import typing as t

from .errors import InvalidEmailError

#: Largest attachment, counted in decoded bytes (the API's limit).
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Largest total of all attachments of one email, in decoded bytes.
MAX_TOTAL_ATTACHMENT_BYTES = 25 * 1024 * 1024

_ARG = "attachments"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_CONTENT_TYPE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_MAPPING_KEYS = frozenset({"filename", "content", "content_type", "content_id"})


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A file to attach to an email.

    .. code-block:: python

        Attachment("invoice.pdf", pdf_bytes)
        Attachment("logo.png", png_bytes, content_id="logo")  # <img src="cid:logo">

    :param filename: the name the recipient sees, without any directory.
    :param content: the raw bytes (not base64; encoding is done for you).
    :param content_type: the MIME type; guessed from ``filename`` when
        ``None``, falling back to ``application/octet-stream``.
    :param content_id: makes the attachment an inline image that the HTML
        body refers to as ``cid:<content_id>``. Give it without angle brackets.
    """

    filename: str
    content: bytes
    content_type: str | None = None
    content_id: str | None = None


#: What ``attachments`` accepts: an :class:`Attachment`, a mapping with the
#: same keys, a path to a file, or a file object opened in binary mode.
AttachmentLike: t.TypeAlias = (
    Attachment | t.Mapping[str, t.Any] | str | os.PathLike[str] | t.IO[bytes]
)


class _AttachmentRequired(t.TypedDict):
    filename: str
    content: str
    content_type: str


class AttachmentPayload(_AttachmentRequired, total=False):
    """One attachment on the wire; ``content`` is base64."""

    content_id: str


def build_attachments(value: object) -> list[AttachmentPayload]:
    """Validate and base64-encode ``attachments``, checking the size limits."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(
        value, cabc.Sequence
    ):
        raise InvalidEmailError(
            _ARG, f"must be a list of attachments, not {type(value).__name__}."
        )
    result: list[AttachmentPayload] = []
    total = 0
    content_ids: set[str] = set()
    for item in value:
        attachment = _to_attachment(item)
        filename = _check_filename(attachment.filename)
        content: object = attachment.content
        if not isinstance(content, (bytes, bytearray)):
            raise InvalidEmailError(
                _ARG,
                f"the content of {filename!r} must be bytes, not"
                f" {type(content).__name__}.",
            )
        _check_size(filename, len(content))
        total += len(content)
        if total > MAX_TOTAL_ATTACHMENT_BYTES:
            raise InvalidEmailError(
                _ARG,
                f"the attachments add up to more than {_mb(MAX_TOTAL_ATTACHMENT_BYTES)}"
                " per email.",
            )
        entry: AttachmentPayload = {
            "filename": filename,
            "content": base64.b64encode(content).decode("ascii"),
            "content_type": _content_type(filename, attachment.content_type),
        }
        if attachment.content_id is not None:
            content_id = _check_content_id(filename, attachment.content_id)
            if content_id in content_ids:
                raise InvalidEmailError(
                    _ARG, f"content_id {content_id!r} is used more than once."
                )
            content_ids.add(content_id)
            entry["content_id"] = content_id
        result.append(entry)
    return result


def _to_attachment(item: object) -> Attachment:
    if isinstance(item, Attachment):
        return item
    if isinstance(item, cabc.Mapping):
        return _from_mapping(item)
    if isinstance(item, (str, os.PathLike)):
        return _from_path(item)
    if callable(getattr(item, "read", None)):
        return _from_file(item)
    raise InvalidEmailError(
        _ARG,
        "each attachment must be an Attachment, a mapping, a path or a binary"
        f" file object, not {type(item).__name__}.",
    )


def _from_mapping(item: t.Mapping[t.Any, t.Any]) -> Attachment:
    unknown = set(item) - _MAPPING_KEYS
    if unknown:
        names = ", ".join(sorted(repr(k) for k in unknown))
        raise InvalidEmailError(
            _ARG,
            f"unknown attachment key(s) {names}; the keys are filename, content,"
            " content_type and content_id.",
        )
    if "filename" not in item or "content" not in item:
        raise InvalidEmailError(
            _ARG, "an attachment mapping needs 'filename' and 'content'."
        )
    content = item["content"]
    if isinstance(content, str):
        # A str is text to attach, not base64: encoding is this module's job.
        content = content.encode("utf-8")
    for key in ("content_type", "content_id"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise InvalidEmailError(_ARG, f"{key!r} must be a string.")
    return Attachment(
        filename=item["filename"],
        content=content,
        content_type=item.get("content_type"),
        content_id=item.get("content_id"),
    )


def _from_path(path: str | os.PathLike[str]) -> Attachment:
    # Only a regular file: open() on a FIFO waits for a writer, and a device
    # may never end, so either would hang enqueue_email. stat() first, so a
    # device is never even opened; then open without blocking and fstat() the
    # open file, in case the path was swapped in between.
    try:
        _check_regular(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            _check_regular(path, os.fstat(f.fileno()).st_mode)
            # One byte past the limit is enough to refuse a huge file.
            content = f.read(MAX_ATTACHMENT_BYTES + 1)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InvalidEmailError(_ARG, f"cannot read {path!r}: {reason}.") from None
    return Attachment(os.path.basename(os.fspath(path)), content)


def _check_regular(path: str | os.PathLike[str], mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
        raise InvalidEmailError(
            _ARG,
            f"{path!r} is {kind}, not a regular file; only regular files can be"
            " attached.",
        )


def _from_file(file: t.Any) -> Attachment:
    if isinstance(file, io.TextIOBase):
        raise InvalidEmailError(
            _ARG, "a file object must be opened in binary mode ('rb'), not text mode."
        )
    # Uploaded files (werkzeug's FileStorage) carry the client's name here.
    name = getattr(file, "filename", None)
    if not isinstance(name, str) or not name:
        name = getattr(file, "name", None)
    if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
        raise InvalidEmailError(
            _ARG,
            "a file object without a name cannot be attached; pass"
            " Attachment(filename, file.read()) instead.",
        )
    content = file.read()
    if isinstance(content, str):
        raise InvalidEmailError(
            _ARG, "a file object must be opened in binary mode ('rb'), not text mode."
        )
    return Attachment(os.path.basename(os.fspath(name)), content)


def _check_filename(filename: object) -> str:
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidEmailError(_ARG, "every attachment needs a non-empty filename.")
    if "/" in filename or "\\" in filename:
        raise InvalidEmailError(
            _ARG, f"the filename {filename!r} must not contain a path separator."
        )
    if _CONTROL.search(filename):
        raise InvalidEmailError(
            _ARG,
            f"the filename {filename!r} must not contain CR, LF or control characters.",
        )
    return filename


def _check_size(name: str, size: int) -> None:
    if size > MAX_ATTACHMENT_BYTES:
        raise InvalidEmailError(
            _ARG,
            f"{name!r} is larger than {_mb(MAX_ATTACHMENT_BYTES)}, the limit"
            " per attachment.",
        )


def _content_type(filename: str, given: object) -> str:
    if given is None:
        return mimetypes.guess_type(filename)[0] or "application/octet-stream"
    if (
        not isinstance(given, str)
        or not _CONTENT_TYPE.match(given)
        or _CONTROL.search(given)
    ):
        raise InvalidEmailError(
            _ARG,
            f"content_type {given!r} of {filename!r} is not a MIME type"
            " such as 'application/pdf'.",
        )
    return given


def _check_content_id(filename: str, content_id: object) -> str:
    if (
        not isinstance(content_id, str)
        or not content_id
        or any(c in content_id for c in "<> ")
        or _CONTROL.search(content_id)
    ):
        raise InvalidEmailError(
            _ARG,
            f"content_id {content_id!r} of {filename!r} must be a non-empty"
            " string without angle brackets, spaces, CR or LF.",
        )
    return content_id


def _mb(size: int) -> str:
    return f"{size // (1024 * 1024)} MB"
