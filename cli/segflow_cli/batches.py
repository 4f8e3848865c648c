"""The loop both `backfill` and `redrive` run: list ahead, batch, hand batches to workers, settle in order.

A lister thread runs ahead of the senders (`Prefetch`: bounded, so 100,000 keys never sit in memory; what
"listed" counts on the progress bar), and `run_batches` settles batches **in listing order**, whatever order
they finish in: a backfill's checkpoint only ever moves past a key once every key before it was handled.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from segflow_cli.senders import ObjectResult, SendRefused

T = TypeVar("T")
_DONE = object()


@dataclass
class RunEnd:
    """Why the loop ended: the listing ran out (`completed`), a batch was refused, or an interrupt."""

    completed: bool = False
    refused: SendRefused | None = None
    interrupted: bool = False


class Prefetch(Generic[T]):
    """Iterates `source` in a thread, `ahead` items ahead of the consumer; `listed` counts them.
    An exception of the source is raised to the consumer where it occurred."""

    def __init__(
        self,
        source: Iterable[T],
        *,
        ahead: int = 5000,
        on_item: Callable[[], None] = lambda: None,
        on_end: Callable[[], None] = lambda: None,
    ):
        self._queue: queue.Queue[object] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._on_item = on_item
        self._on_end = on_end
        self._thread = threading.Thread(target=self._fill, args=(source,), name="segflow-lister", daemon=True)
        self._thread.start()

    def _fill(self, source: Iterable[T]) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
                self._on_item()
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._on_end()
        self._put(_DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        self._stop.set()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


Settle = Callable[[list[T], Sequence[ObjectResult], bool], None]
"""`on_settled(batch, results, in_order)`: `in_order` is False for a batch that was sent after an earlier
one was refused (count it, but a checkpoint must not move past the refused one)."""


def run_batches(
    batches: Iterable[list[T]],
    handle: Callable[[list[T]], list[ObjectResult]],
    on_settled: Settle[T],
    *,
    workers: int,
) -> RunEnd:
    """Hand each batch to `handle` on one of `workers` threads, at most `2 × workers` in flight; call
    `on_settled` for each batch in order. A batch that raises `SendRefused` stops the run: nothing after it
    is started, the batches already in flight finish and are counted, but settled as out of order (a
    checkpoint stays before the refused one). Ctrl-C stops starting new batches and lets the ones in
    flight finish (their objects are settled, so the checkpoint is exact); a second Ctrl-C leaves at once."""
    end = RunEnd()
    in_flight: deque[tuple[list[T], Future[list[ObjectResult]]]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="segflow-send")
    finished = False
    try:
        try:
            for batch in batches:
                in_flight.append((batch, pool.submit(handle, batch)))
                while in_flight and (len(in_flight) >= 2 * max(1, workers) or in_flight[0][1].done()):
                    _settle_head(in_flight, on_settled, end)
                if end.refused is not None:
                    break
            else:
                end.completed = True
        except KeyboardInterrupt:
            end.interrupted = True
        while in_flight:
            _settle_head(in_flight, on_settled, end)
        finished = True
    except KeyboardInterrupt:  # the second Ctrl-C: leave now; what was settled stays settled
        end.interrupted = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=not finished)
    if end.refused is not None or end.interrupted:
        end.completed = False
    return end


def _settle_head(
    in_flight: deque[tuple[list[T], Future[list[ObjectResult]]]], on_settled: Settle[T], end: RunEnd
) -> None:
    """Wait for the oldest batch and settle it (a refused one is remembered, not settled). It leaves the
    queue only once its result is in: a Ctrl-C while waiting must not let a later batch settle first."""
    batch, future = in_flight[0]
    try:
        results = future.result()
    except SendRefused as refused:
        in_flight.popleft()
        end.refused = end.refused or refused
        return
    in_flight.popleft()
    on_settled(batch, results, end.refused is None)
