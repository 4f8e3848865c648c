"""The stubbed `oss2.Bucket` of the storage tests, for tests of other commands that talk to OSS.

`stub_oss(mocker)` makes every `oss2.Bucket(...)` the in-memory `FakeOssBucket` of
tests/unit/test_storage_oss.py (one per bucket name) and returns them by name.
"""

from __future__ import annotations

from typing import Any

from pytest_mock import MockerFixture

from tests.unit.test_storage_oss import FakeOssBucket


def stub_oss(mocker: MockerFixture) -> dict[str, FakeOssBucket]:
    buckets: dict[str, FakeOssBucket] = {}

    def make(auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> FakeOssBucket:
        return buckets.setdefault(bucket_name, FakeOssBucket(auth, endpoint, bucket_name, **kwargs))

    mocker.patch("oss2.Bucket", side_effect=make)
    return buckets
