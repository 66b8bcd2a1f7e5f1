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


def redact_url(url: str) -> str:
    """``url`` with its password and secret-named query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        netloc = f"{parts.username or ''}:{HIDDEN}@{parts.hostname or ''}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(SECRET_NAME.search(k) for k, _ in pairs):
            query = "&".join(f"{quote(k)}={HIDDEN if SECRET_NAME.search(k) else quote(v)}" for k, v in pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def strip_secrets(url: str) -> str:
    """``url`` as it may be stored (settings, history): without its password (the user name
    stays) and without secret-named query parameters. Not a URL: unchanged."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if password is not None:
        user = f"{parts.username}@" if parts.username else ""
        netloc = f"{user}{parts.hostname or ''}" + (f":{port}" if port is not None else "")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if not SECRET_NAME.search(k)]
    query = parts.query if len(kept) == len(pairs) else "&".join(f"{quote(k)}={quote(v)}" for k, v in kept)
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))
