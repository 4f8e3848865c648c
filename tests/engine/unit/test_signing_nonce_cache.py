"""NonceCache: the server's memory of nonces (VISION-API.md §1: a nonce must not repeat within 15 minutes)."""

from __future__ import annotations

import threading

from segflow_engine.verify import NonceCache


def test_a_nonce_is_refused_the_second_time_within_the_window() -> None:
    """Spec section 1: SignatureNonce unique per request, no repeat within 15 minutes."""
    cache = NonceCache()

    assert cache.check_and_add("AK", "n1", now=1000.0) is True
    assert cache.check_and_add("AK", "n1", now=1000.0 + 899) is False


def test_a_nonce_is_forgotten_after_15_minutes() -> None:
    """Spec section 1: the window is 15 minutes; after it the memory is released."""
    cache = NonceCache()
    cache.check_and_add("AK", "n1", now=1000.0)

    assert cache.check_and_add("AK", "n1", now=1000.0 + 901) is True
    assert cache.size() == 1


def test_nonces_are_kept_per_access_key() -> None:
    cache = NonceCache()
    cache.check_and_add("AK-1", "shared", now=0.0)

    assert cache.check_and_add("AK-2", "shared", now=1.0) is True
    assert cache.check_and_add("AK-1", "shared", now=2.0) is False


def test_the_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    cache = NonceCache(max_entries=3)
    for i in range(5):
        cache.check_and_add("AK", f"n{i}", now=float(i))

    assert cache.size() == 3
    assert cache.check_and_add("AK", "n4", now=6.0) is False
    assert cache.check_and_add("AK", "n0", now=6.0) is True


def test_an_empty_cache_is_still_truthy() -> None:
    """`nonces or NonceCache()` must not silently replace a shared, still empty cache."""
    assert NonceCache()


def test_concurrent_use_lets_each_nonce_through_exactly_once() -> None:
    cache = NonceCache()
    accepted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for i in range(200):
            ok = cache.check_and_add("AK", f"n{i}", now=10.0)
            with lock:
                accepted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert accepted.count(True) == 200
    assert len(accepted) == 8 * 200
