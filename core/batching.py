"""Group commit: many concurrent callers, one transaction.

Each durable write (an audit entry, a replay-cache row) costs a commit, and a
commit costs an fsync. :class:`GroupCommitter` lets concurrent callers hand in
their items and wait; one worker writes everything pending in a single call
(one transaction) and wakes each caller with its own result, or with the
exception if the write failed. A caller's ``submit`` returns only after the
write that carried its item has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["GroupCommitter"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommitter(Generic[T, R]):
    """Batch ``submit(item)`` calls into ``write(items) -> results`` (same order, same length)."""

    def __init__(
        self, write: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_batch: int = 1024
    ) -> None:
        self._write = write
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("group committer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    results = await self._write([item for item, _ in batch])
                    if len(results) != len(batch):
                        raise RuntimeError("group write returned the wrong number of results")
                except BaseException as e:  # every waiter learns that its write failed
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    if isinstance(e, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

    async def close(self) -> None:
        """Finish what is pending, then stop."""
        self._closed = True
        if self._pending:
            await asyncio.gather(*(f for _, f in self._pending), return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
