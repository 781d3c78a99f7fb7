"""Dynamic batching: requests from many threads are coalesced into one forward pass on one thread.

One worker thread owns the runtime session, so inference never runs twice at once and each pass uses
every core. The first request after an idle moment goes straight to the model; items that queued while a
pass ran wait at most `max_wait` for others to join. The queue of waiting items is bounded, and a request
that would overflow it is refused at once rather than left to wait.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Generic, TypeVar

from clip_vectorize.errors import DeadlineExceededError, OverloadedError

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchLimits:
    max_batch: int  # the most items one pass takes
    max_wait_s: float  # how long the first item of a batch waits for others to join it
    max_queue: int  # items that may wait; a request that would overflow is refused at once


class MicroBatcher(Generic[Item, Result]):
    """Items from many threads in, one `run_batch` call per batch on this batcher's own thread."""

    def __init__(self, run_batch: Callable[[list[Item]], Iterable[Result]], limits: BatchLimits, *, name: str) -> None:
        self.on_batch: Callable[[int], None] | None = None  # told the size of every forward pass (metrics)
        self._run_batch = run_batch
        self.limits = limits
        self._pending: deque[tuple[Item, Future]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, items: Sequence[Item]) -> list[Future]:
        """Queue `items`; each future resolves to its item's result, or raises what the batch raised."""
        futures: list[Future] = [Future() for _ in items]
        with self._ready:
            if self._closed:
                raise OverloadedError("the encoder is shutting down")
            # A request larger than the bound still gets into an empty queue, so big batch calls always work.
            if self._pending and len(self._pending) + len(items) > self.limits.max_queue:
                raise OverloadedError(f"{len(self._pending)} items are waiting for the model "
                                      f"(CLIP_QUEUE_SIZE={self.limits.max_queue})")
            self._pending.extend(zip(items, futures))
            self._ready.notify()
        return futures

    def run(self, items: Sequence[Item], timeout: float | None = None) -> list[Result]:
        """Results in input order. Past `timeout` seconds the items still queued are withdrawn (they will not
        use the model) and DeadlineExceededError is raised."""
        futures = self.submit(items)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return [future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
                    for future in futures]
        except FutureTimeout:
            self._withdraw(futures)
            raise DeadlineExceededError(
                f"the model did not get to this request within {timeout:g} s (CLIP_REQUEST_TIMEOUT_S)") from None

    def _withdraw(self, futures: list[Future]) -> None:
        """Take a caller's items that no batch has started out of the queue: they no longer count or run."""
        with self._ready:
            withdrawn = {id(future) for future in futures if future.cancel()}
            if withdrawn:
                self._pending = deque(entry for entry in self._pending if id(entry[1]) not in withdrawn)

    def close(self) -> None:
        """Finish what is queued, then stop the worker thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = self._run_batch(items)
            except BaseException as exc:  # hand the failure to every caller; the thread lives on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)

    def _next_batch(self) -> list[tuple[Item, Future]] | None:
        with self._ready:
            was_idle = not self._pending
            while not self._pending:
                if self._closed:
                    return None
                self._ready.wait()
            if not was_idle:  # items queued while a pass ran: more are likely on their way, let them join
                self._wait_for_company()
            batch: list[tuple[Item, Future]] = []
            while self._pending and len(batch) < self.limits.max_batch:
                item, future = self._pending.popleft()
                if future.set_running_or_notify_cancel():  # False: its caller gave up waiting; skip it
                    batch.append((item, future))
        if batch and self.on_batch is not None:
            self.on_batch(len(batch))
        return batch

    def _wait_for_company(self) -> None:
        """Hold the batch open up to max_wait for more items (the lock is held; waiting releases it)."""
        deadline = time.monotonic() + self.limits.max_wait_s
        while len(self._pending) < self.limits.max_batch and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._ready.wait(remaining)
