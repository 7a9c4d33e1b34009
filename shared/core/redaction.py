"""Masking of credentials in URLs, so a Redis password never reaches a log or a repr."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host; also scheme://:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")


def mask_url_passwords(text: str) -> str:
    """Replace every URL password in text with ***."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
