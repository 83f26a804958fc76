"""Reading one provider response: a bounded body, HTTP status, JSON, validated fields.

Everything a provider sends is checked here, once, so that nothing dirty reaches a
table, a log line or a terminal:

- The body is read up to :data:`MAX_BODY_BYTES`, decompressed (``gzip``/``deflate``) by a
  bounded decompressor; a larger answer is refused as :class:`OversizedResponseError`
  (malformed, *possibly billed*).
- JSON that cannot be parsed, deeply nested JSON included, is malformed.
- ``code`` is an ASCII integer. A code outside a signed 32-bit integer (the audit's
  ``provider_code INTEGER``) is an :class:`~mobile_status_dagster.core.errors.UnknownProviderError`
  with no code and the raw code text, cut, in its message.
- ``check`` is one ASCII digit ``0``-``5`` (a JSON string or integer), optionally with
  ASCII whitespace around it; anything else (``"١"``, ``"01"``, ``True``, ``1.0``) is
  malformed.
- ``operator`` is one of :data:`~mobile_status_dagster.core.status.SERVING_OPERATORS`
  (any ASCII case, ASCII whitespace around it). Anything else is stored as ``None`` and
  said in the message (``[operator not recognized: 'XX']``); the answer, its status and
  its billing are kept.
- ``order_number`` is at most 64 printable ASCII characters without spaces. Anything
  else is kept in a cleaned form: each other character replaced by ``?``, cut to 64,
  and said in the message; a billed answer stays billed. A non-string (``true``, a
  list) is ``None``.
- ``msg`` loses ANSI escape sequences, control, format and private-use characters and
  lone surrogates; whitespace runs become one space; it is cut to 200 characters; the
  token is redacted before and after cleaning.

So every string an :class:`Answer` (or an error raised here) carries is printable and
encodable as UTF-8, and every code fits the audit.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, quote_plus

import httpx

from mobile_status_dagster.core.errors import (
    MalformedResponseError,
    OversizedResponseError,
    ProviderError,
    RateLimitedError,
    ServerError,
    UnexpectedHTTPStatusError,
    UnknownProviderError,
    provider_error,
)
from mobile_status_dagster.core.status import SERVING_OPERATORS, Status

SUCCESS_CODE = 2000
#: The provider signals errors under 200 and, in older APIs, 202.
_JSON_STATUSES = frozenset({200, 202})
_EXCERPT_CHARS = 60

#: The largest answer body read, in bytes, both as received and once decompressed.
#: A real answer is about 150 bytes; 64 KiB leaves room for a verbose provider while
#: bounding the memory a hostile or broken one can take (a gzip bomb of a few hundred
#: kB inflates to hundreds of MB). A larger answer is refused, possibly billed.
MAX_BODY_BYTES = 64 * 1024  # OversizedResponseError says 64 KiB: keep them together
#: Content encodings asked for (``Accept-Encoding``): those read by a bounded decoder.
ACCEPT_ENCODING = "gzip, deflate"
#: Longest provider message kept, in characters (longer ones are cut, marked ``…``).
MAX_MESSAGE_CHARS = 200
#: Longest order number kept, in characters.
MAX_ORDER_NUMBER_CHARS = 64
#: Longest quote of a rejected provider value in a message, in characters.
MAX_QUOTED_CHARS = 32

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_ASCII_INTEGER = re.compile(r"-?[0-9]+")
_ORDER_NUMBER = re.compile(rf"[!-~]{{1,{MAX_ORDER_NUMBER_CHARS}}}")
#: ANSI escape sequences: CSI (7- and 8-bit), OSC (up to BEL or ST), and two-byte escapes.
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[@-Z\\-_]?"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful (code 2000) answer, its fields validated and cleaned."""

    message: str | None
    order_number: str | None
    status: Status
    operator: str | None


# -- the body ---------------------------------------------------------------------------


async def read_body(response: httpx.Response, *, redact: str) -> bytes:
    """The body of ``response``: at most :data:`MAX_BODY_BYTES`, decompressed as it arrives.

    Reads the raw stream (the default transport leaves ``Content-Encoding`` to httpx)
    and decodes ``gzip``/``deflate`` with a bounded decompressor, so an answer never
    takes more than the cap in memory. A response already read (``httpx.Response``
    built with ``content=``, as in tests) is checked against the cap.

    Raises:
        OversizedResponseError: the body is larger than the cap, sent or decoded.
        MalformedResponseError: an encoding that is unknown, or that does not decode.

    For statuses whose body is not read (anything but 200/202), a body that is too
    large or undecodable is returned as ``b""``: the status decides.
    """
    try:
        return await _read_bounded(response, redact)
    except MalformedResponseError:
        if response.status_code in _JSON_STATUSES:
            raise
        return b""


async def _read_bounded(response: httpx.Response, redact: str) -> bytes:
    try:
        content = response.content
    except httpx.ResponseNotRead:
        pass
    else:
        if len(content) > MAX_BODY_BYTES:
            raise _oversized(content, redact)
        return content
    decoder = _decoder(response.headers.get_list("content-encoding", split_commas=True), redact)
    received = 0
    chunks: list[bytes] = []
    # aiter_raw: the bytes as sent. aiter_bytes would inflate each chunk unbounded.
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > MAX_BODY_BYTES:
            raise _oversized(chunks[0] if chunks else chunk, redact)
        chunks.append(chunk if decoder is None else decoder.decode(chunk))
    if decoder is not None:
        chunks.append(decoder.flush())
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Stage(Protocol):
    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


class _Deflate:
    """``deflate`` as servers send it: zlib-wrapped (RFC 9110) or, often, raw."""

    def __init__(self) -> None:
        self._inner = zlib.decompressobj()
        self._first = True

    def decompress(self, data: bytes, max_length: int, /) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._inner.decompress(data, max_length)
            except zlib.error:
                self._inner = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._inner.decompress(data, max_length)


class _BoundedDecoder:
    """Undoes a list of content encodings; no stage may produce more than the cap."""

    def __init__(self, stages: list[_Stage], redact: str) -> None:
        self._stages = stages
        self._produced = [0] * len(stages)
        self._redact = redact
        self._head = b""

    def decode(self, data: bytes) -> bytes:
        for index, stage in enumerate(self._stages):
            room = MAX_BODY_BYTES - self._produced[index]
            try:
                # At most one byte over the room: the decoder stops there, input left over.
                data = stage.decompress(data, room + 1)
            except zlib.error:
                problem = "content encoding does not decode"
                raise _malformed(problem, self._head, self._redact) from None
            self._produced[index] += len(data)
            if len(data) > room:
                raise _oversized(self._head + data, self._redact)
        if len(self._head) < _EXCERPT_CHARS * 4:
            self._head += data[: _EXCERPT_CHARS * 4]
        return data

    def flush(self) -> bytes:
        return self.decode(b"")


def _decoder(encodings: list[str], redact: str) -> _BoundedDecoder | None:
    stages: list[_Stage] = []
    for encoding in reversed(encodings):  # the last encoding applied is undone first
        name = encoding.strip().lower()
        if name in ("", "identity"):
            continue
        if name in ("gzip", "x-gzip"):
            stages.append(zlib.decompressobj(zlib.MAX_WBITS | 16))
        elif name == "deflate":
            stages.append(_Deflate())
        else:
            problem = f"unsupported content encoding {_quoted(name, redact)}"
            raise _malformed(problem, b"", redact)
    return _BoundedDecoder(stages, redact) if stages else None


# -- the answer -------------------------------------------------------------------------


def read_answer(http_status: int, body: bytes, *, redact: str) -> Answer:
    """The answer in a response, or the typed error it carries.

    Raises:
        ProviderError: a non-2000 code (its subclass follows the error table; a code
            that does not fit a signed 32-bit integer is ``UnknownProviderError`` with
            ``provider_code=None`` and the code's text in its message).
        ServerError: HTTP 5xx.
        RateLimitedError: HTTP 429.
        UnexpectedHTTPStatusError: any other status the contract does not use.
        OversizedResponseError: a body over :data:`MAX_BODY_BYTES` (possibly billed).
        MalformedResponseError: a 200/202 body that is not the provider's JSON.
    """
    if http_status not in _JSON_STATUSES:
        if http_status >= 500:
            raise ServerError(http_status)
        if http_status == 429:
            raise RateLimitedError(None, "HTTP 429")
        raise UnexpectedHTTPStatusError(http_status)
    if len(body) > MAX_BODY_BYTES:
        raise _oversized(body, redact)
    fields = _fields(body, redact)
    message = _message(fields.get("msg"), redact)
    code = _code(fields, body, redact, message)
    if code != SUCCESS_CODE:
        raise provider_error(code, message)
    status = _status(fields.get("check"), body, redact)
    notes: list[str] = []
    operator = _operator(fields.get("operator"), notes, redact)
    order_number = _order_number(fields.get("order_number"), notes, redact)
    if notes:
        message = f"{message or ''} [{'; '.join(notes)}]".lstrip()
    return Answer(message=message, order_number=order_number, status=status, operator=operator)


def _fields(body: bytes, redact: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("body is not JSON", body, redact) from None
    except RecursionError:
        raise _malformed("JSON nested too deeply", body, redact) from None
    if not isinstance(parsed, dict):
        raise _malformed("body is not a JSON object", body, redact)
    return {str(key).lower(): value for key, value in parsed.items()}


def _code(fields: dict[str, Any], body: bytes, redact: str, message: str | None) -> int:
    code = fields.get("code")
    if isinstance(code, bool) or not isinstance(code, int | str):
        raise _malformed("no integer 'code' field", body, redact)
    if isinstance(code, str):
        text = code.strip(_ASCII_SPACE)
        if not _ASCII_INTEGER.fullmatch(text):
            raise _malformed("'code' is not an integer", body, redact)
        # Anything longer than 11 characters is out of range; int() is not needed for it.
        value = int(text) if len(text) <= 11 else None
    else:
        text, value = None, code
    if value is not None and _INT32_MIN <= value <= _INT32_MAX:
        return value
    raw = text if text is not None else str(code)
    detail = f"code {_cut(_scrub(raw, redact), MAX_QUOTED_CHARS)} out of range"
    raise UnknownProviderError(None, f"{detail}: {message}" if message else detail)


def _status(check: object, body: bytes, redact: str) -> Status:
    if isinstance(check, bool) or not isinstance(check, int | str):
        raise _malformed("no 'check' status in a 2000 answer", body, redact)
    if isinstance(check, int):
        if 0 <= check <= 5:
            return Status(check)
    else:
        digit = check.strip(_ASCII_SPACE)
        if len(digit) == 1 and "0" <= digit <= "5":
            return Status(ord(digit) - ord("0"))
    raise _malformed("'check' is not a status 0-5", body, redact)


def _operator(value: object, notes: list[str], redact: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        code = value.strip(_ASCII_SPACE).upper()
        if code in SERVING_OPERATORS and value.isascii():
            return code
        if not code:
            return None
    notes.append(f"operator not recognized: {_quoted(value, redact)}")
    return None


def _order_number(value: object, notes: list[str], redact: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        notes.append(f"order_number not a string: {_quoted(value, redact)}")
        return None
    text = _scrub(value.strip(_ASCII_SPACE), redact)
    if not text or _ORDER_NUMBER.fullmatch(text):
        return text or None
    cleaned = "".join(c if "!" <= c <= "~" else "?" for c in text[:MAX_ORDER_NUMBER_CHARS])
    notes.append(f"order_number cleaned from {len(text)} characters")
    return cleaned


def _message(value: object, redact: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None  # a list or an object is no message; never str() it (deep nesting)
    # Scrubbed before cleaning (the token as sent) and after (the token with escapes or
    # control characters inside it), and only then cut: a cut never leaves part of it.
    text = _scrub(value if isinstance(value, str) else str(value), redact)
    text = _scrub(_printable(text), redact) if not text.isprintable() else text.strip()
    return _cut(text, MAX_MESSAGE_CHARS) or None


def _printable(text: str) -> str:
    """``text`` without ANSI escapes and non-printable characters; whitespace runs as one space."""
    text = _ANSI.sub("", text)
    kept = "".join(c if c.isprintable() else (" " if c.isspace() else "") for c in text)
    return " ".join(kept.split())


def _quoted(value: object, redact: str) -> str:
    """A short, printable ASCII, token-free quote of a rejected value, for a message."""
    if isinstance(value, str):
        text = _scrub(value, redact)
    elif isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = type(value).__name__
    text = _cut(text, MAX_QUOTED_CHARS)
    return "'" + "".join(c if " " <= c <= "~" and c != "'" else "?" for c in text) + "'"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _scrub(text: str, token: str) -> str:
    """``text`` without ``token``, as sent or as a server may echo it (URL- or JSON-escaped)."""
    if not token:
        return text
    for form in _token_forms(token):
        if form in text:
            text = text.replace(form, "***")
    return text


@functools.lru_cache(maxsize=8)
def _token_forms(token: str) -> tuple[str, ...]:
    """The token as sent and as a server may echo it, longest first (computed once)."""
    escaped = json.dumps(token)[1:-1]
    forms = {token, quote(token, safe=""), quote_plus(token), escaped, escaped.replace("/", "\\/")}
    return tuple(sorted(forms, key=len, reverse=True))


def _malformed(problem: str, body: bytes, redact: str) -> MalformedResponseError:
    return MalformedResponseError(
        f"malformed provider response ({problem}): {excerpt(body, redact)}"
    )


def _oversized(body: bytes, redact: str) -> OversizedResponseError:
    return OversizedResponseError(
        f"malformed provider response (larger than {MAX_BODY_BYTES} bytes, possibly billed): "
        f"{excerpt(body, redact)}"
    )


def excerpt(body: bytes, redact: str) -> str:
    """A short, printable, token-free quote of a body for error messages."""
    text = _scrub(body[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace"), redact)
    text = "".join(c if c.isprintable() else " " for c in text)
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "…"
    return repr(text)


__all__ = [
    "ACCEPT_ENCODING",
    "MAX_BODY_BYTES",
    "SUCCESS_CODE",
    "Answer",
    "OversizedResponseError",
    "ProviderError",
    "excerpt",
    "read_answer",
    "read_body",
]
