"""The client-side token bucket: 2 QPS by default (VISION-API.md §4, VISION-API.md §1), one per process."""

from __future__ import annotations

import threading

import pytest

from segflow.ratelimit import DEFAULT_JITTER_MARGIN, DEFAULT_QPS, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _limiter(qps: float, burst: int = 1) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(qps, burst, clock=clock, sleep=clock.sleep), clock


def test_default_is_the_documented_two_qps() -> None:
    assert DEFAULT_QPS == 2.0
    assert RateLimiter().qps == 2.0


def test_first_request_passes_and_the_next_ones_are_spaced_by_one_over_qps() -> None:
    limiter, clock = _limiter(qps=2)
    start = clock.now
    sent_at: list[float] = []

    for _ in range(5):
        limiter.acquire()
        sent_at.append(clock.now - start)

    # Spaced by 1/qps, and a third request waits a whole second (plus the jitter margin) after the first,
    # so a server counting any sliding second never sees more than 2.
    m = DEFAULT_JITTER_MARGIN
    assert sent_at == pytest.approx([0.0, 0.5, 1.0 + m, 1.5 + m, 2.0 + 2 * m])


@pytest.mark.parametrize("qps", [1, 2, 5, 50, 2.5])
def test_no_sliding_second_ever_holds_more_than_the_quota(qps: float) -> None:
    """The service counts calls per second (2 QPS by default) and throttles what is over it."""
    limiter, clock = _limiter(qps=qps)
    start = clock.now
    times = []
    for _ in range(int(qps * 6) + 3):
        limiter.acquire()
        times.append(clock.now - start)

    quota = max(1, int(qps))
    for i, t in enumerate(times):
        assert len([u for u in times[i:] if u <= t + 1.0]) <= quota
    # ... and still runs close to the quota: ⌊qps⌋ per second and a bit (a sliding second holds whole calls)
    achievable = min(qps, quota / (1.0 + DEFAULT_JITTER_MARGIN))
    assert times[-1] <= len(times) / achievable + 0.05


def test_idle_time_refills_but_never_beyond_the_burst() -> None:
    limiter, clock = _limiter(qps=5, burst=3)
    clock.now += 60  # a minute idle saves at most `burst` tokens

    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []

    limiter.acquire()
    assert clock.sleeps == pytest.approx([0.2])


def test_at_most_burst_plus_qps_times_t_requests_in_any_window() -> None:
    limiter, clock = _limiter(qps=4, burst=2)
    start = clock.now
    times = []
    for _ in range(40):
        limiter.acquire()
        times.append(clock.now - start)

    for i, t in enumerate(times):
        in_window = [u for u in times[i:] if u < t + 1.0]
        assert len(in_window) <= 2 + 4


def test_concurrent_callers_get_distinct_slots() -> None:
    # The clock is frozen: every thread reserves at the same instant, so the waits must be distinct,
    # 1/qps apart, and every 5 (the quota) apart by a second plus the jitter margin.
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def worker() -> None:
        barrier.wait()
        wait = limiter.reserve()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    expected = [(n // 5) * (1.0 + DEFAULT_JITTER_MARGIN) + (n % 5) / 5 for n in range(20)]
    assert sorted(waits) == pytest.approx(expected)


def test_shared_returns_one_limiter_per_key_and_setting() -> None:
    first = RateLimiter.shared(3.0, key="test-shared-a")

    assert RateLimiter.shared(3.0, key="test-shared-a") is first
    assert RateLimiter.shared(3, key="test-shared-a") is first
    assert RateLimiter.shared(3.0, key="test-shared-b") is not first
    assert RateLimiter.shared(4.0, key="test-shared-a") is not first


def test_shared_is_the_same_object_across_threads() -> None:
    seen: list[RateLimiter] = []
    lock = threading.Lock()

    def worker() -> None:
        limiter = RateLimiter.shared(7.0, key="test-shared-threads")
        with lock:
            seen.append(limiter)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(seen) == 16
    assert all(limiter is seen[0] for limiter in seen)


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_settings_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(qps, burst)


def test_a_caller_that_wakes_up_late_spaces_the_requests_booked_after_it() -> None:
    """A busy interpreter can wake a caller well after its slot. The service counts when calls arrive
    (VISION-API.md §1: over the quota is `Throttling.User`), so the window runs from the time the late
    call really went: without that, the call booked two after it would share its second."""
    clock = FakeClock()
    late = {"by": 0.0}

    def oversleep(seconds: float) -> None:
        clock.sleep(seconds + late["by"])

    limiter = RateLimiter(2, 1, clock=clock, sleep=oversleep)
    start = clock.now
    times = []
    for lateness in (0.0, 0.3, 0.0, 0.0, 0.0):  # the second call is booked at 0.5 and goes at 0.8
        late["by"] = lateness
        limiter.acquire()
        times.append(clock.now - start)
    assert times[1] == pytest.approx(0.8)
    for i, t in enumerate(times):
        assert len([u for u in times[i:] if u < t + 1.0]) <= 2, times
