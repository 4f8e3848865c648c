"""LocalDirStorage on real files, and its loopback presign server over real HTTP (127.0.0.1 only)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from segflow.errors import ObjectExistsError, StorageError
from segflow_cli.localbucket import LocalDirStorage, LocalPresignServer
from tests.support.storage_contract import StorageContract, payload


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture(scope="module")
def presign_server(clock: Clock) -> Iterator[LocalPresignServer]:
    server = LocalPresignServer(clock=clock)
    yield server
    server.close()


@pytest.fixture
def storage(tmp_path: Path, presign_server: LocalPresignServer, clock: Clock) -> LocalDirStorage:
    clock.now = 1_800_000_000.0
    return LocalDirStorage(tmp_path, "segflow-demo", presign_server=presign_server)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture
def fetch_presigned() -> Callable[[str], bytes]:
    def fetch(url: str) -> bytes:
        status, body, _ = http_get(url)
        assert status == 200, body
        return body

    return fetch


class TestLocalDirStorageContract(StorageContract):
    """The shared contract, on real files."""


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_objects_live_at_root_bucket_key(storage: LocalDirStorage, tmp_path: Path) -> None:
    storage.put_bytes("incoming/猫 a+b.png", b"x")
    assert (tmp_path / "segflow-demo" / "incoming" / "猫 a+b.png").read_bytes() == b"x"


def test_files_dropped_into_the_directory_are_objects(storage: LocalDirStorage, tmp_path: Path) -> None:
    target = tmp_path / "segflow-demo" / "incoming" / "dropped.jpg"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"abc")
    assert storage.head("incoming/dropped.jpg").etag == "900150983CD24FB0D6963F7D28E17F72"  # md5("abc")


@pytest.mark.parametrize(
    "key",
    [
        "incoming/../escape.png",
        "incoming//double.png",
        "incoming/./x.png",
        "/abs.png",
        "incoming/" + "长" * 90,
    ],
)
def test_keys_that_would_leave_or_alias_the_bucket_are_refused(storage: LocalDirStorage, key: str) -> None:
    with pytest.raises(StorageError) as caught:
        storage.put_bytes(key, b"x")
    assert caught.value.code == "InvalidObjectName"


def test_presigned_url_expires(storage: LocalDirStorage, clock: Clock) -> None:
    storage.put_bytes("incoming/a.png", b"data")
    url = storage.presign_get("incoming/a.png", 60)
    clock.now += 59
    assert http_get(url)[0] == 200
    clock.now += 2
    assert http_get(url)[0] == 403


def test_presigned_url_tampering_is_refused(storage: LocalDirStorage) -> None:
    storage.put_bytes("incoming/a.png", b"data")
    storage.put_bytes("incoming/b.png", b"other")
    url = storage.presign_get("incoming/a.png", 60)
    expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
    assert http_get(with_query(url, Expires=str(expires + 3600)))[0] == 403
    assert http_get(url.replace("/incoming/a.png", "/incoming/b.png"))[0] == 403
    assert http_get(with_query(url, Signature="0" * 64))[0] == 403
    assert http_get(url.split("?")[0])[0] == 403


def test_presigned_url_of_a_deleted_object_is_404(storage: LocalDirStorage) -> None:
    storage.put_bytes("incoming/a.png", b"data")
    url = storage.presign_get("incoming/a.png", 60)
    storage.delete("incoming/a.png")
    assert http_get(url)[0] == 404


@pytest.mark.parametrize(
    ("range_header", "status", "expected", "content_range"),
    [
        ("bytes=0-9", 206, slice(0, 10), "bytes 0-9/1000"),
        ("bytes=990-", 206, slice(990, 1000), "bytes 990-999/1000"),
        ("bytes=-5", 206, slice(995, 1000), "bytes 995-999/1000"),
        ("bytes=900-5000", 206, slice(900, 1000), "bytes 900-999/1000"),
        ("bytes=1000-1010", 416, slice(0, 0), "bytes */1000"),
    ],
)
def test_presign_server_honours_range(
    storage: LocalDirStorage, range_header: str, status: int, expected: slice, content_range: str
) -> None:
    data = payload(1000)
    storage.put_bytes("incoming/v.mp4", data)
    got_status, body, headers = http_get(storage.presign_get("incoming/v.mp4", 60), {"Range": range_header})
    assert got_status == status
    assert headers["Content-Range"] == content_range
    if status == 206:
        assert body == data[expected]


def test_presign_server_tells_content_type(storage: LocalDirStorage) -> None:
    storage.put_bytes("incoming/a.png", b"\x89PNG")
    _, _, headers = http_get(storage.presign_get("incoming/a.png", 60))
    assert headers["Content-Type"] == "image/png"


def test_two_roots_with_one_bucket_name_stay_apart(
    tmp_path: Path, presign_server: LocalPresignServer, fetch_presigned: Callable[[str], bytes]
) -> None:
    first = LocalDirStorage(tmp_path / "one", "segflow-demo", presign_server=presign_server)
    second = LocalDirStorage(tmp_path / "two", "segflow-demo", presign_server=presign_server)
    first.put_bytes("incoming/a.png", b"one")
    second.put_bytes("incoming/a.png", b"two")
    assert fetch_presigned(first.presign_get("incoming/a.png", 60)) == b"one"
    assert fetch_presigned(second.presign_get("incoming/a.png", 60)) == b"two"


def test_shared_presign_server_starts_on_first_use(
    tmp_path: Path, fetch_presigned: Callable[[str], bytes]
) -> None:
    storage = LocalDirStorage(tmp_path, "segflow-demo")
    storage.put_bytes("incoming/a.png", b"shared")
    url = storage.presign_get("incoming/a.png", 60)
    assert url.startswith("http://127.0.0.1:")
    assert fetch_presigned(url) == b"shared"


def test_presign_base_url_is_used_verbatim_when_given(tmp_path: Path) -> None:
    storage = LocalDirStorage(tmp_path, "segflow-demo", "http://files.local:8080/")
    storage.put_bytes("incoming/猫 1.png", b"x")
    assert storage.presign_get("incoming/猫 1.png", 60) == (
        "http://files.local:8080/segflow-demo/incoming/%E7%8C%AB%201.png"
    )


def test_concurrent_put_if_absent_has_exactly_one_winner(storage: LocalDirStorage) -> None:
    winners: list[int] = []
    losers: list[int] = []
    barrier = threading.Barrier(8)

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            storage.put_bytes("segflow-jobs/claim.json", str(n).encode(), if_absent=True)
            winners.append(n)
        except ObjectExistsError:
            losers.append(n)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(winners) == 1 and len(losers) == 7
    assert storage.get_bytes("segflow-jobs/claim.json") == str(winners[0]).encode()


def test_writes_never_show_a_partial_object(storage: LocalDirStorage) -> None:
    seen_during_write: list[bool] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(3):
            seen_during_write.append(storage.bucket_dir.joinpath("segmented", "out.bin").exists())
            yield b"x" * 1000

    storage.put_stream("segmented/out.bin", chunks())
    assert seen_during_write == [False, False, False]
    assert storage.head("segmented/out.bin").size == 3000


def test_delete_prunes_empty_directories(storage: LocalDirStorage) -> None:
    storage.put_bytes("segflow-jobs/pending/x/y.json", b"{}")
    storage.delete("segflow-jobs/pending/x/y.json")
    assert not (storage.bucket_dir / "segflow-jobs").exists()
    assert storage.bucket_dir.is_dir()


def test_invalid_bucket_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        LocalDirStorage(tmp_path, "../etc")
