"""Secrets out of what is shown: a URL's password and its query parameters named like a secret
(token, key, password, secret, auth, signature...) become ``***`` in logs, events, errors and
``--json``; :func:`redact_text` does it to every URL inside a message."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, quote, urlsplit, urlunsplit

#: query parameter names that hold a secret
SECRET_NAME = re.compile(r"token|key|pass|pwd|secret|auth|sig|credential|session", re.IGNORECASE)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>()]+")
HIDDEN = "***"


def _rewrite(url: str, mask: str | None) -> str:
    """``url`` with its password and its secret-named query values replaced by ``mask``, or
    removed when ``mask`` is None (the user name stays)."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return url
    if mask is None and not (parts.scheme and parts.netloc):
        return url  # a file path, webcam:0: nothing to store differently
    netloc = parts.netloc
    if password is not None:
        user = parts.username or ""
        login = f"{user}:{mask}@" if mask is not None else (f"{user}@" if user else "")
        netloc = login + (parts.hostname or "") + (f":{port}" if port is not None else "")
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    if any(SECRET_NAME.search(k) for k, _ in pairs):
        query = "&".join(f"{quote(k)}={mask if SECRET_NAME.search(k) else quote(v)}" for k, v in pairs
                         if mask is not None or not SECRET_NAME.search(k))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """``url`` with its password and secret-named query values replaced by ``***``."""
    return _rewrite(url, HIDDEN)


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def strip_secrets(url: str) -> str:
    """``url`` as it may be stored (settings, history): without its password (the user name
    stays) and without secret-named query parameters. Not a URL: unchanged."""
    return _rewrite(url, None)
