"""One exception tree for kcap. Every message says what to do next."""

from __future__ import annotations


class KcapError(Exception):
    """Base of every error kcap raises on purpose."""


class ConfigError(KcapError):
    """A setting or flag is invalid."""


class ModelLoadError(KcapError):
    """A model could not be loaded from the hub id or folder it was given."""


class DecodeError(KcapError):
    """A message could not be decoded; carries the raw payload for the log."""

    def __init__(self, message: str, *, payload: object) -> None:
        super().__init__(message)
        self.payload = payload


class BadImageError(KcapError):
    """An input file cannot be used as an image (unreadable, too large, not an image)."""


class UnsafePathError(KcapError):
    """A path in a message would leave the configured roots."""


class BrokerError(KcapError):
    """The broker (Redis) cannot be reached or started."""


class WorkerDiedError(KcapError):
    """A job's worker died on it too many times (shared.core.attempts): it goes to errors."""


class ShardSourceError(KcapError):
    """Input shards cannot be listed or opened: nothing matches, or the store cannot be reached."""


class ShardWriteError(KcapError):
    """An output shard cannot be written as asked (a key or column it cannot hold, a closed writer)."""
