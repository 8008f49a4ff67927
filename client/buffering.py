"""The hand-over buffer between a consumer's background reading and the caller."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["Handover"]

ItemT = TypeVar("ItemT")


class Handover(Generic[ItemT]):
    """A queue the reader fills and the caller drains in batches; a failure of the reader
    reaches a caller that is waiting, not only the next one."""

    def __init__(self, max_items: int = 0) -> None:
        self.queue: asyncio.Queue[ItemT] = asyncio.Queue(max_items)
        self._failed = asyncio.Event()
        self.failure: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self._failed.set()

    def drop_all(self) -> list[ItemT]:
        items = []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items

    async def take(self, max_items: int, timeout_s: float | None) -> list[ItemT]:
        """Up to `max_items` at once (waiting up to `timeout_s` for the first); empty on
        timeout; raises the reader's failure once nothing is left to hand over."""
        if self.queue.empty():
            if self.failure is not None:
                raise self.failure
            getter = asyncio.ensure_future(self.queue.get())
            failed = asyncio.ensure_future(self._failed.wait())
            try:
                await asyncio.wait({getter, failed}, timeout=timeout_s,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                failed.cancel()
                getter.cancel()  # no effect once it has its item
            if getter.cancelled() or not getter.done():
                if self.failure is not None:
                    raise self.failure
                return []
            items = [getter.result()]
        else:
            items = [self.queue.get_nowait()]
        while len(items) < max_items and not self.queue.empty():
            items.append(self.queue.get_nowait())
        return items
