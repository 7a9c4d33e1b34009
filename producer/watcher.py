"""watchdog events into the stability gate; polling for network filesystems."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from producer.stability import StabilityGate
from shared.core.naming import shown

log = logging.getLogger(__name__)


class _GateHandler(FileSystemEventHandler):
    """Every event that may mean "a file is here or has new bytes" touches the gate."""

    def __init__(self, gate: StabilityGate, on_new_dir: Callable[[Path], None] | None) -> None:
        self.gate = gate
        self.on_new_dir = on_new_dir

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._on_event(event)
        except OSError as exc:
            # One odd path must not end the observer's thread, and with it every later event;
            # the reconcile scan still finds what this event was about.
            log.warning("cannot follow %s (%s); the next scan takes it up", shown(str(event.src_path)), exc)

    def _on_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent):
            self.gate.touch(Path(str(event.dest_path)))
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            self.gate.touch(Path(str(event.src_path)))
        elif isinstance(event, DirCreatedEvent | DirMovedEvent):
            # A folder moved in (or made and filled quickly) brings files with no events of
            # their own; the producer scans it.
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            if self.on_new_dir is not None:
                self.on_new_dir(Path(str(target)))


def start_observer(
    root: Path,
    gate: StabilityGate,
    *,
    recursive: bool,
    polling: bool,
    poll_interval_s: float,
    on_new_dir: Callable[[Path], None] | None = None,
) -> BaseObserver:
    """A started observer (inotify and friends, or polling) feeding the gate."""
    observer: BaseObserver = PollingObserver(timeout=poll_interval_s) if polling else Observer()
    observer.schedule(_GateHandler(gate, on_new_dir), str(root), recursive=recursive)
    observer.daemon = True
    observer.start()
    return observer
