"""pysyncobj's poller interface on top of the asyncio event loop.

With it, pysyncobj's sockets are watched by the event loop and its ticks run on the loop thread:
one thread does all of a node's Python work, so the Raft engine and the HTTP server no longer
hand the GIL back and forth (measured in docs/architecture.md). pysyncobj's event constants are
passed in, so raft_engine stays the only module that imports pysyncobj.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

__all__ = ["LoopPoller"]

EventCallback = Callable[[int, int], None]
log = logging.getLogger(__name__)


class LoopPoller:
    def __init__(self, loop: asyncio.AbstractEventLoop, read_event: int, write_event: int,
                 on_event: Callable[[], None]) -> None:
        self._loop = loop
        self._read = read_event
        self._write = write_event
        self._on_event = on_event
        self._masks: dict[int, int] = {}

    def subscribe(self, descr: int, callback: EventCallback, eventMask: int) -> None:
        self.unsubscribe(descr)
        if eventMask & self._read:
            self._loop.add_reader(descr, self._fire, descr, callback, self._read)
        if eventMask & self._write:
            self._loop.add_writer(descr, self._fire, descr, callback, self._write)
        self._masks[descr] = eventMask

    def unsubscribe(self, descr: int) -> None:
        mask = self._masks.pop(descr, 0)
        # pysyncobj sometimes closes a socket before unsubscribing it; the kernel has already
        # dropped a closed descriptor from epoll, and asyncio forgets it when told fails.
        with contextlib.suppress(OSError):
            if mask & self._read:
                self._loop.remove_reader(descr)
        with contextlib.suppress(OSError):
            if mask & self._write:
                self._loop.remove_writer(descr)

    def poll(self, timeout: float) -> None:
        """The event loop delivers events; a tick never waits here."""

    def close(self) -> None:
        for descr in list(self._masks):
            self.unsubscribe(descr)

    def _fire(self, descr: int, callback: EventCallback, event: int) -> None:
        # Errors and hang-ups surface as readability: pysyncobj's read path checks SO_ERROR/EOF.
        try:
            callback(descr, event)
        except Exception:
            # pysyncobj's own tick loop logs and carries on after a failed callback; so do we.
            log.exception("Raft socket callback failed on descriptor %d", descr)
        self._on_event()
