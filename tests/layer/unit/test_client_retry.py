"""The retry table and the bounded, fully jittered backoff (issue 2, "Errors")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from segflow.errors import ApiConnectionError, ApiError
from segflow.retry import RETRY_TABLE, RetryPolicy, is_retryable, is_retryable_error


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FixedRng:
    """`uniform(a, b)` returns the point `fraction` of the way from a to b; records the bounds asked for."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.bounds: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.bounds.append((a, b))
        return a + (b - a) * self.fraction


def _policy(clock: FakeClock, fraction: float = 1.0, **kwargs: float) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, clock=clock, rng=FixedRng(fraction), **kwargs)  # type: ignore[arg-type]


def _failing(errors: list[Exception], result: str = "done") -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return attempt, calls


# --- the table -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling.User", 400),  # imageseg documents it as a 400
        ("Throttling", 400),
        ("Throttling.SomethingNew", 400),  # the Throttling family
        ("Whatever", 429),
        ("Timeout", 408),  # imageseg 408
        ("InternalError", 500),
        ("InternalError.Env", 500),
        ("InternalError.Model", 500),
        ("InternalError.Algo", 500),
        ("InternalServerError", 500),  # videoseg
        ("InternalServerError.Busy", 500),
        ("ServiceUnavailable", 503),
        ("Anything", 502),
        (None, 504),
        ("ConnectionError", None),
        ("PicWish.Throttling", 429),
        ("PicWish.InternalError", 500),
    ],
)
def test_transient_errors_are_retryable(code: str | None, status: int | None) -> None:
    assert is_retryable(code, status)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("InvalidImage.Resolution", 400),
        ("InvalidImage.Download", 400),
        ("InvalidImage.Region", 400),
        ("InvalidParameter.TooLarge", 400),
        ("SignatureDoesNotMatch", 400),
        ("SignatureNonceUsed", 400),
        ("InvalidTimeStamp.Expired", 400),
        ("InvalidAccessKeyId.NotFound", 404),
        ("InvalidApi.NotPurchase", 403),
        ("InvalidApi.NotPurchase", 503),  # explicit "no" beats the 5xx rule
        ("Unauthorized", 403),
        ("InvalidFile.Decode", 400),
        ("PicWish.InvalidImage", 200),
        ("PicWish.Unauthorized", 401),
        (None, None),
        (None, 400),
    ],
)
def test_everything_else_is_not_retryable(code: str | None, status: int | None) -> None:
    assert not is_retryable(code, status)


def test_every_5xx_status_is_in_the_table() -> None:
    assert all(RETRY_TABLE[("*", status)] for status in range(500, 600))


def test_connection_errors_are_always_retryable_whatever_their_code() -> None:
    assert is_retryable_error(ApiConnectionError("reset", code="SomethingOdd"))
    assert not is_retryable_error(ApiError("no", code="InvalidImage.URL", http_status=400))


# --- backoff -------------------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_from_the_base_and_stops_at_the_maximum() -> None:
    policy = RetryPolicy(base_delay=0.2, max_delay=1.0)

    ceilings = [policy.backoff_ceiling(n) for n in range(1, 7)]

    assert ceilings == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert policy.backoff_ceiling(10_000) == 1.0  # no float overflow on absurd retry numbers


@pytest.mark.parametrize("fraction", [0.0, 0.37, 1.0])
def test_full_jitter_draws_between_zero_and_the_ceiling(fraction: float) -> None:
    rng = FixedRng(fraction)
    policy = RetryPolicy(base_delay=0.5, max_delay=10.0, rng=rng)

    delays = [policy.backoff(n) for n in (1, 2, 3)]

    assert rng.bounds == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]
    assert delays == pytest.approx([0.5 * fraction, 1.0 * fraction, 2.0 * fraction])


def test_real_random_backoff_stays_within_bounds() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=0.3)

    delays = [policy.backoff(n) for n in range(1, 8) for _ in range(200)]

    assert all(0.0 <= delay <= 0.3 for delay in delays)
    assert max(delays) > 0.2  # jitter spreads over the whole range, not a fixed delay


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


# --- running ---------------------------------------------------------------------------------------------


def test_throttled_call_is_retried_until_it_succeeds() -> None:
    clock = FakeClock()
    attempt, calls = _failing(
        [ApiError("slow down", code="Throttling.User", http_status=400), ApiConnectionError("reset")]
    )

    assert _policy(clock).run(attempt) == "done"

    assert len(calls) == 3
    assert clock.sleeps == pytest.approx([0.2, 0.4])


def test_non_retryable_error_is_raised_at_once() -> None:
    clock = FakeClock()
    error = ApiError("too big", code="InvalidImage.Resolution", http_status=400, request_id="R")
    attempt, calls = _failing([error])

    with pytest.raises(ApiError) as caught:
        _policy(clock).run(attempt)

    assert caught.value is error
    assert len(calls) == 1
    assert clock.sleeps == []


def test_other_exceptions_are_not_retried() -> None:
    clock = FakeClock()
    attempt, calls = _failing([RuntimeError("bug")])

    with pytest.raises(RuntimeError):
        _policy(clock).run(attempt)

    assert len(calls) == 1


def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    clock = FakeClock()
    errors: list[Exception] = [ApiError(f"e{n}", code="InternalError", http_status=500) for n in range(10)]
    attempt, calls = _failing(errors)

    with pytest.raises(ApiError, match="e3"):
        _policy(clock, max_attempts=4).run(attempt)

    assert len(calls) == 4
    assert len(clock.sleeps) == 3


def test_total_time_is_bounded_including_time_spent_in_attempts() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def slow_failure() -> str:
        calls.append(1)
        clock.now += 3.0  # each attempt takes 3 s before failing
        raise ApiError("busy", code="InternalServerError.Busy", http_status=500)

    policy = _policy(clock, max_attempts=100, base_delay=1.0, max_delay=1.0, max_total=10.0)

    with pytest.raises(ApiError):
        policy.run(slow_failure)

    # 3 s + 1 s + 3 s + 1 s + 3 s = 11 s would cross 10 s at the next sleep: stop after 3 attempts.
    assert len(calls) == 3
    assert clock.now <= 10.0 + 3.0  # the bound is checked before every sleep, never overshot by a delay
    assert sum(clock.sleeps) == pytest.approx(2.0)


def test_zero_total_time_means_a_single_attempt() -> None:
    clock = FakeClock()
    attempt, calls = _failing([ApiConnectionError("reset")])

    with pytest.raises(ApiConnectionError):
        _policy(clock, fraction=0.5, max_total=0.0).run(attempt)

    assert len(calls) == 1
