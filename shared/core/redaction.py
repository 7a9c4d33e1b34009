"""Masking of credentials in URLs, so a Redis password never reaches a log or a repr."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host; also scheme://:password@host. The
# password runs to the last @ before the end of the URL's text (a password may hold @, : or
# /, as redis-py reads them), so nothing of it shows; over-masking a path is the safe side.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>\S+)(?=@)")


def mask_url_passwords(text: str) -> str:
    """Replace every URL password in text with ***."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***", text)
