"""Who may use the console and how: the token, the session cookie, CSRF, security headers.

- Without `BEATD_WEB_TOKEN` the console serves loopback only (the CLI refuses
  any other address) and answers only requests whose Host is a loopback
  name, so a web page cannot reach it by DNS rebinding.
- With a token every page needs it: as `Authorization: Bearer TOKEN`, or
  through the login page, which sets a session cookie (signed, HttpOnly,
  SameSite=Lax) that holds no secret. The signing key is derived from the
  token, so changing the token logs every session out.
- Every POST carries the session's CSRF token in a form field, compared in
  constant time; a request authenticated by its bearer header needs none
  (a browser never adds that header by itself).
- Every response carries a strict Content-Security-Policy (no script at all,
  no framing), nosniff, no referrer, and no caching.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, redirect, request, session, url_for

TOKEN_ENV = "BEATD_WEB_TOKEN"
MIN_TOKEN = 16  # characters; a shorter token could be guessed
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1", "[::1]"]
CSRF_REFUSED = (
    "the form was not sent from this console (CSRF check failed): reload the page and try again"
)
OPEN_ENDPOINTS = frozenset({"login", "static"})
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def install(app: Flask, token: str | None) -> None:
    """Configure `app`'s session and attach the checks that run around every request."""
    app.config.update(
        SECRET_KEY=(
            hmac.new(token.encode(), b"beatd-web-session", hashlib.sha256).digest()
            if token
            else os.urandom(32)
        ),
        SESSION_COOKIE_NAME="beatd_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        TRUSTED_HOSTS=None if token else LOOPBACK_NAMES,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["auth_required"] = token is not None

    @app.before_request
    def check() -> Any:
        bearer = _bearer()
        if token is not None and request.endpoint not in OPEN_ENDPOINTS:
            if bearer is not None:
                if not _same(bearer, token):
                    return _refused()
            elif not session.get("auth"):
                if request.method == "GET":
                    return redirect(url_for("login", next=request.full_path.rstrip("?")))
                return _refused()
        if request.method == "POST" and bearer is None:
            sent = request.form.get("csrf", "")
            if not sent or not _same(sent, session.get("csrf", "")):
                abort(403, CSRF_REFUSED)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(HEADERS)
        return response


def log_in(given: str, token: str) -> bool:
    """Start an authenticated session if `given` is the token."""
    if not _same(given, token):
        return False
    session.clear()  # nothing planted before login carries over
    session.permanent = True
    session["auth"] = True
    return True


def safe_next(target: str | None) -> str:
    """Where to go after login: a path on this console, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("schedules")
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else url_for("schedules")


def csrf_token() -> str:
    """This session's CSRF token (made on first use)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refused() -> Response:
    response = Response("authentication required\n", 401, mimetype="text/plain")
    response.headers["WWW-Authenticate"] = 'Bearer realm="beatd"'
    return response
