"""Logging setup shared by every kcap process."""

from __future__ import annotations

import logging
import os

from shared.core.redaction import mask_url_passwords


class _RedactingFilter(logging.Filter):
    """Masks broker passwords in any record, whoever logged it (Celery and kombu included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_url_passwords(message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


def configure_logging(level: str | None = None) -> None:
    """Configure root logging once; the level comes from KCAP_LOG_LEVEL unless given."""
    chosen = (level or os.environ.get("KCAP_LOG_LEVEL") or "INFO").upper()
    root = logging.getLogger()
    if not any(isinstance(f, _RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
        handler.addFilter(_RedactingFilter())
        root.addHandler(handler)
    root.setLevel(chosen)
