"""Secrets out of everything beatd shows: one function, `redact`, for every URL and message.

A URL's password is everything between the first `:` of its user info and
the last `@` of the URL, so a password with `@ : / ? #` in it, written
percent-encoded or not, is hidden whole (a driver that cut it at an `@`
would show the rest as a host name). Query parameters that carry secrets
(`password=`, `sslpassword=`, pika's `ssl_options=`...) are hidden too.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
# A query parameter that carries a secret; its value runs to the next `&` (a raw `#`,
# `@` or `?` in it is still the secret).
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&][^=&?#]*(?:pass|pwd|secret|token|ssl_options|sslkey)[^=&?#]*=)(?P<value>[^&]*)",
    re.IGNORECASE,
)
_PASSWORD_ENTRY = re.compile(r"""password['"]?\s*[:=]\s*['"]?([^'",}&\s]+)""", re.IGNORECASE)
_SEPARATORS = re.compile(r"[@:/?#&=]")
_MIN_SECRET = 3  # shorter fragments are not looked for in free text (they would hit words)


def redact(text: str, *urls: str) -> str:
    """`text` fit to show a user: every password in it replaced by ``***``.

    `text` is a URL (``redact(url)``) or a message that may quote URLs or
    parts of them; `urls` are the URLs whose secrets may appear in it in
    another form (percent-decoded, or cut by a driver at an ``@``), e.g.
    ``redact(str(exc), settings.database, settings.broker)``.
    """
    secrets = _secrets_of(urls)
    if "://" not in text:  # most log lines
        return _scrub(text, secrets)
    if _SCHEME.match(text):
        return _masked(text, secrets)
    parts = _URL_IN_TEXT.split(text)
    shown = [_scrub(part, secrets) for part in parts]
    found = [_masked(url, secrets) for url in _URL_IN_TEXT.findall(text)]
    return "".join(p + u for p, u in zip(shown, [*found, ""], strict=True))


def _split(url: str) -> tuple[str, str, str | None, str]:
    """(scheme://, user, password or None, the rest from the host on) of a URL whose
    secret query values are masked already (so its last `@` ends the user info)."""
    scheme = _SCHEME.match(url)
    head = url[: scheme.end()] if scheme else ""
    rest = url[len(head) :]
    at = rest.rfind("@")
    if at < 0:
        return head, "", None, rest
    user, colon, password = rest[:at].partition(":")
    if any(c in user for c in "/?#"):  # that `@` is in a path or query, not after user info
        return head, "", None, rest
    return head, user, password if colon else None, rest[at:]


def _without_params(url: str) -> str:
    return _SECRET_PARAM.sub(lambda found: found["name"] + MASK, url)


def _masked(url: str, secrets: tuple[str, ...]) -> str:
    head, user, password, rest = _split(_without_params(url))
    rest = _scrub(rest, secrets)
    if password is None:
        return head + user + rest
    return f"{head}{user}:{MASK}{rest}"


@functools.lru_cache(maxsize=16)  # every log line passes the same two URLs
def _secrets_of(urls: tuple[str, ...]) -> tuple[str, ...]:
    """The forms to look for, longest first (a whole password before its pieces)."""
    found = {s for url in urls for s in _secrets(url) if len(s) >= _MIN_SECRET}
    return tuple(sorted(found, key=len, reverse=True))


def _secrets(url: str) -> list[str]:
    """Every form a secret of `url` may take in a message: raw, decoded, and in pieces."""
    password = _split(_without_params(url))[2]
    values = [password] if password else []
    for param in _SECRET_PARAM.finditer(url):
        values.append(param["value"])
        values += _PASSWORD_ENTRY.findall(unquote(param["value"]))  # in pika's ssl_options
    forms = {form for value in values if value for form in (value, unquote(value))}
    pieces = {piece for form in forms for piece in _SEPARATORS.split(form)}
    return [*forms, *pieces]


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text
