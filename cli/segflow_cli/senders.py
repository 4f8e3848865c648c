"""The two ways `segflow backfill` and `segflow redrive` hand objects to on_upload.

Both build the events OSS would have delivered (each object's real key, size, ETag and LastModified,
several records per event) and go through the handler code the trigger runs, so an object ends as if just
uploaded. `FcSender` (`--via fc`) sends asynchronous FC 3.0 invocations, paced per record; `LocalSender`
(`--local`) runs the handler in this process with FC's redelivery imitated. What each guarantees and how
it stops: docs/operations.md and the classes below.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from segflow.errors import SegflowError
from segflow.events import object_created_event
from segflow.ratelimit import DEFAULT_JITTER_MARGIN
from segflow.retry import RetryPolicy
from segflow.storage.base import ObjectInfo

if TYPE_CHECKING:
    from segflow_cli.fcapi import FcClient
    from segflow_cli.localrun import LocalRuntime

MAX_EVENT_BYTES = 64 * 1024
"""Half of FC's 128 KB limit on an asynchronous invocation's payload (FC docs, "EntityTooLarge: payload size
exceeds maximum allowed size")."""
SEND_RETRY = RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=10.0, max_total=60.0)
FC_ASYNC_ATTEMPTS = 4
"""FC's default for an asynchronous invocation: the first delivery plus 3 retries (s.yaml keeps it)."""
REDELIVERY_BASE_DELAY = 2.0
"""Seconds before the first imitated redelivery; doubled for each next one."""


class ObjectResult(NamedTuple):
    """How one object of a backfill or redrive ended (as far as this run can tell)."""

    key: str
    outcome: str
    """done | submitted | failed | fault | skipped | unfinished | sent | pending, and for a redrive also
    already-done | held | gone | not-failed."""
    action: str | None = None
    code: str | None = None
    detail: str | None = None
    etag: str | None = None


class SendRefused(SegflowError):
    """The platform refused a batch (or the deployment is at fault): the run stops here, and what was not
    sent is left for the next run. `results` are the objects of the batch handed over before it stopped."""

    default_code = "SendRefused"

    def __init__(self, message: str, *, results: Sequence[ObjectResult] = (), **fields: Any) -> None:
        super().__init__(message, **fields)
        self.results = list(results)


class Sender(Protocol):
    """Hands a batch of objects to on_upload and says how each ended."""

    via: str

    def send(self, targets: Sequence[ObjectInfo]) -> list[ObjectResult]: ...

    def close(self) -> None: ...


# -- events ---------------------------------------------------------------------------------------------


class EventShape(NamedTuple):
    """What every record of the events of one run shares."""

    bucket: str
    region: str
    event_name: str = "ObjectCreated:Backfill"
    rule_id: str = "segflow-backfill"
    account: str = "000000000000"


def event_time(seconds: float | None) -> str:
    """OSS's `eventTime` format (`2022-08-13T06:45:43.000Z`); the object's LastModified when known."""
    stamp = time.time() if seconds is None else seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}Z"


def event_record(shape: EventShape, target: ObjectInfo) -> dict[str, Any]:
    event = object_created_event(
        shape.bucket,
        target.key,
        etag=target.etag,
        size=target.size,
        region=shape.region,
        event_name=shape.event_name,
        event_time=event_time(target.last_modified),
        account=shape.account,
        rule_id=shape.rule_id,
    )
    record: dict[str, Any] = event["events"][0]
    return record


def event_payloads(
    shape: EventShape, targets: Sequence[ObjectInfo], *, max_bytes: int = MAX_EVENT_BYTES
) -> Iterator[tuple[list[ObjectInfo], bytes]]:
    """The targets as events (`{"events": [...]}`), as many records per event as fit in `max_bytes`."""
    group: list[ObjectInfo] = []
    records: list[str] = []
    size = len(b'{"events":[]}')
    for target in targets:
        record = json.dumps(event_record(shape, target), ensure_ascii=False, separators=(",", ":"))
        length = len(record.encode("utf-8")) + 1
        if group and size + length > max_bytes:
            yield group, _join(records)
            group, records, size = [], [], len(b'{"events":[]}')
        group.append(target)
        records.append(record)
        size += length
    if group:
        yield group, _join(records)


def _join(records: list[str]) -> bytes:
    return ('{"events":[' + ",".join(records) + "]}").encode("utf-8")


# -- via FC ---------------------------------------------------------------------------------------------


class RecordPacer:
    """Paces events by the records they carry: at most ⌊qps⌋ records in any window of one second (plus
    the same margin for network jitter as `segflow.ratelimit`), counted when their event is sent, and an
    event of n records at least n/qps seconds after the one before it (so a backfill is a steady flow,
    not a burst a second). An event of more than ⌊qps⌋ records is spaced by its size alone. Thread-safe:
    `reserve(n)` books the next slot and returns how long to wait for it."""

    def __init__(
        self,
        qps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        margin: float = DEFAULT_JITTER_MARGIN,
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        self.qps = qps
        self.cap = max(1, math.floor(qps))
        self.window = 1.0 + margin
        self._clock = clock
        self._sent: deque[tuple[float, int]] = deque()
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self, records: int) -> float:
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if records <= self.cap:
                start = self._room_at(start, records)
            self._sent.append((start, records))
            self._next = start + records / self.qps
            while self._sent and self._sent[0][0] + self.window <= start:
                self._sent.popleft()  # later reservations start later still: never counted again
            return start - now

    def _room_at(self, start: float, records: int) -> float:
        """The earliest time from `start` when the window before it leaves room for `records`."""
        while True:
            # `at + window`, the moment an event leaves the window, is computed the same way here and
            # below, so moving `start` there always lets that event out (no float rounding loop).
            inside = [(at, n) for at, n in self._sent if at + self.window > start]
            if sum(n for _, n in inside) + records <= self.cap:
                return start
            start = inside[0][0] + self.window


class FcSender:
    """Asynchronous FC 3.0 invocations of the deployed on_upload function, paced at `qps` records/s (FC's
    async queue then never ages past `maxAsyncEventAgeInSeconds`). Throttled and 5xx answers are retried
    with backoff; any other refusal is about the deployment or the keys and stops the run (`SendRefused`)."""

    via = "fc"

    def __init__(
        self,
        client_factory: Callable[[], FcClient],
        function: str,
        shape: EventShape,
        *,
        qps: float,
        qualifier: str | None = None,
        retry: RetryPolicy | None = None,
        max_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.function = function
        self.shape = shape
        self.qualifier = qualifier
        self.retry = retry or SEND_RETRY
        self.max_bytes = max_bytes
        self.pacer = RecordPacer(qps)
        self._factory = client_factory
        self._local = threading.local()
        self._clients: list[FcClient] = []
        self._lock = threading.Lock()
        self.invocations = 0

    def _client(self) -> FcClient:
        """One client (one connection pool) per thread: a requests session is not documented as
        thread-safe."""
        client: FcClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def send(self, targets: Sequence[ObjectInfo]) -> list[ObjectResult]:
        results: list[ObjectResult] = []
        for group, payload in event_payloads(self.shape, targets, max_bytes=self.max_bytes):
            wait = self.pacer.reserve(len(group))
            if wait > 0:
                time.sleep(wait)
            try:
                request_id = self._invoke(payload)
            except SendRefused as refused:
                refused.results = results  # the events of this batch FC took before refusing one
                raise
            results += [
                ObjectResult(t.key, "sent", detail=f"FC request {request_id}", etag=t.etag) for t in group
            ]
        return results

    def _invoke(self, payload: bytes) -> str | None:
        from segflow_cli.fcapi import CloudApiError

        client = self._client()
        try:
            result = self.retry.run(
                lambda: client.invoke(self.function, payload, qualifier=self.qualifier, asynchronous=True),
                what=f"InvokeFunction {self.function}",
                retry_if=lambda error: isinstance(error, CloudApiError) and error.retryable,
            )
        except SegflowError as error:
            raise SendRefused(
                f"FC refused the invocation of {self.function}: {error}",
                code=error.code,
                http_status=error.http_status,
                request_id=error.request_id,
            ) from error
        with self._lock:
            self.invocations += 1
        return result.request_id

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


# -- in this process ------------------------------------------------------------------------------------


class LocalSender:
    """The on_upload handler in this process, redelivered as FC would while it raises.

    A deployment fault (keys, permissions, AppCode: `failure_policy`) is not redelivered — it does not
    clear in seconds — and stops the run (`SendRefused`) unless `keep_going`, in which case the object
    keeps its fault record for `segflow redrive` once the cause is fixed."""

    via = "local"

    def __init__(
        self,
        runtime: LocalRuntime,
        shape: EventShape,
        *,
        keep_going: bool = False,
        attempts: int = FC_ASYNC_ATTEMPTS,
    ) -> None:
        self.runtime = runtime
        self.shape = shape
        self.keep_going = keep_going
        self.attempts = attempts

    def send(self, targets: Sequence[ObjectInfo]) -> list[ObjectResult]:
        results: list[ObjectResult] = []
        for group, payload in event_payloads(self.shape, targets):
            try:
                results += self._deliver(group, payload)
            except SendRefused as refused:
                refused.results = results + refused.results  # every object before it was processed
                raise
        return results

    def _deliver(self, group: list[ObjectInfo], payload: bytes) -> list[ObjectResult]:
        from segflow.failure_policy import is_deployment_error

        for attempt in range(1, self.attempts + 1):
            lines, raised = self.runtime.upload(payload)
            if raised is None or attempt == self.attempts:
                break
            if isinstance(raised, SegflowError) and is_deployment_error(raised):
                break
            time.sleep(REDELIVERY_BASE_DELAY * 2 ** (attempt - 1))
        results = outcomes_of(group, lines, raised)
        fault = next((r for r in results if r.outcome == "fault"), None)
        if fault is not None and not self.keep_going:
            raise SendRefused(
                f"deployment fault {fault.code} on {fault.key} ({fault.detail or 'see the failure record'}); "
                "fix the deployment and run the same command again (it continues where it stopped), "
                "or pass --keep-going to record faults and go on",
                code=fault.code,
                results=results,
            )
        return results

    def close(self) -> None:
        self.runtime.close()


_FINAL_OF_DUPLICATE = {state: state for state in ("done", "failed", "submitted", "superseded")}


def outcomes_of(
    group: Sequence[ObjectInfo], lines: Sequence[dict[str, Any]], raised: BaseException | None
) -> list[ObjectResult]:
    """Each object's outcome from the services' outcome lines of the last delivery; an object with no
    line (the handler failed before reaching it) is `unfinished` with the error's code."""
    by_key: dict[str, dict[str, Any]] = {}
    for line in lines:
        if isinstance(line.get("key"), str):
            by_key[line["key"]] = line
    results = []
    for target in group:
        found = by_key.get(target.key)
        if found is None:
            code = getattr(raised, "code", type(raised).__name__ if raised else None)
            results.append(ObjectResult(target.key, "unfinished", code=code, etag=target.etag))
            continue
        outcome, detail = str(found.get("outcome")), found.get("detail")
        if outcome == "duplicate":
            outcome = _FINAL_OF_DUPLICATE.get(str(detail), "unfinished")
        elif outcome in ("retry", "deferred"):
            outcome = "unfinished"
        results.append(
            ObjectResult(target.key, outcome, found.get("action"), found.get("code"), detail, target.etag)
        )
    return results
