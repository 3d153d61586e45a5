"""Per-request batching for GraphQL resolvers (the DataLoader pattern).

graphql-core resolves the siblings of one level concurrently; each resolver
asks ``loader.load(key)`` and the loader answers all keys asked in the same
event-loop turn with one call of its batch function -- one SQL statement per
level of the query instead of one per object.

    >>> async def double(keys):
    ...     return {k: k * 2 for k in keys}
    >>> import asyncio
    >>> async def demo():
    ...     loader = BatchLoader(double)
    ...     return await asyncio.gather(loader.load(1), loader.load(2))
    >>> asyncio.run(demo())
    [2, 4]
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

BatchFn = Callable[[Sequence[K]], Awaitable[Mapping[K, V]]]


class BatchLoader(Generic[K, V]):
    """Collects keys for one loop turn, loads them at once, caches per request.

    Keys the batch function does not return load as ``None``.
    """

    def __init__(self, batch: BatchFn[K, V]) -> None:
        self._batch = batch
        self._cache: dict[K, asyncio.Future[V | None]] = {}
        self._pending: list[K] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs until each batch ends

    def load(self, key: K) -> asyncio.Future[V | None]:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._cache[key] = future
        if not self._pending:
            loop.call_soon(self._schedule)
        self._pending.append(key)
        return future

    async def load_many(self, keys: Sequence[K]) -> list[V | None]:
        return list(await asyncio.gather(*(self.load(k) for k in keys)))

    def _schedule(self) -> None:
        task = asyncio.ensure_future(self._dispatch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self) -> None:
        keys, self._pending = self._pending, []
        try:
            found = await self._batch(keys)
        except Exception as exc:  # every waiter of this batch sees the failure
            for key in keys:
                if not self._cache[key].done():
                    self._cache[key].set_exception(exc)
            return
        for key in keys:
            if not self._cache[key].done():
                self._cache[key].set_result(found.get(key))
