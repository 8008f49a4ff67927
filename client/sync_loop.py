"""`LoopThread`: an asyncio event loop of its own in a daemon thread, for the sync client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")
_STOP_TIMEOUT_S = 10.0


class LoopThread:
    """An event loop running forever in a daemon thread, until `stop()`."""

    def __init__(self, name: str = "raftmq-client-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result in the calling thread."""
        if self._stopped:
            coroutine.close()
            raise RuntimeError("the client is closed")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("a SyncClient cannot be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Interrupted while waiting (or failed): make sure nothing keeps running.
            future.cancel()
            raise

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        shutdown = asyncio.run_coroutine_threadsafe(_shutdown(), self._loop)
        # The loop is stopped regardless; a task that ignores cancellation is abandoned.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            shutdown.result(timeout=_STOP_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()


async def _shutdown() -> None:
    """Cancel what is still running and release the loop's executor threads (DNS lookups)."""
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
