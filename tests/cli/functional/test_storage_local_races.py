"""LocalDirStorage under other processes' writes and deletes: storage errors, never bare OS errors.

GIVEN one bucket directory shared by several processes (the way `segflow invoke` on_upload, collect_jobs and
a second terminal share one), where `delete` removes folders it leaves empty
WHEN they put, read, head, list and delete in the same folders at once (or one such race is forced)
THEN every put succeeds and reads back what it wrote, a vanished object is `ObjectNotFoundError`, any other
OS failure is a `StorageError` with the code OSS would give, and nothing else escapes.
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow_cli.localbucket import LocalBuckets, LocalDirStorage

BUCKET = "segflow-demo"
HAMMER_SECONDS = 2.5
WORKERS = 3


# ------------------------------------------------------------------------------- real processes racing


def _own_key_round(storage: LocalDirStorage, worker: int, n: int) -> int:
    """Put one key in a folder the others empty and remove, read it back, delete it. Returns 1 per put."""
    key = f"race/{n % 3}/{n % 2}/w{worker}-{n}.bin"
    data = f"{worker}:{n}:".encode() * (1 + n % 50)
    style = n % 3
    if style == 0:
        etag = storage.put_bytes(key, data)
    elif style == 1:
        etag = storage.put_stream(key, iter([data[:7], data[7:]]))
    else:
        etag = storage.put_bytes(key, data, if_absent=True)
    expected = hashlib.md5(data).hexdigest().upper()
    if etag != expected or storage.get_bytes(key) != data or storage.head(key).etag != expected:
        raise AssertionError(f"{key} did not read back what was written")
    if storage.read_range(key, 0, 4) != data[:4] or b"".join(storage.open_stream(key, 5)) != data:
        raise AssertionError(f"{key}: ranged or streamed read differs")
    storage.delete(key)
    return 1


def _others_round(storage: LocalDirStorage) -> int:
    """List the racing folders and read whatever is listed: only `ObjectNotFoundError` may say it is gone."""
    seen = 0
    for info in storage.list("race/"):
        seen += 1
        try:
            storage.head(info.key)
            storage.get_bytes(info.key)
            storage.read_range(info.key, 1, 3)
        except ObjectNotFoundError:
            pass
    return seen


def hammer(root: str, worker: int, seconds: float, results: Any) -> None:
    """One racing process (module level, so `spawn` can import it)."""
    storage = LocalDirStorage(Path(root), BUCKET)
    puts = listed = kept = 0
    unexpected: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            puts += _own_key_round(storage, worker, n)
            listed += _others_round(storage)
            if n % 40 == 0:  # a few objects that stay, in a folder nobody deletes from
                storage.put_bytes(f"kept/w{worker}/{n}.txt", f"{worker}-{n}".encode())
                kept += 1
        except Exception as exc:  # everything is recorded: the test lists what escaped
            name = f"{type(exc).__module__}.{type(exc).__qualname__}"
            unexpected.append(f"{name}: {exc}\n{traceback.format_exc()}")
    results.put({"worker": worker, "puts": puts, "listed": listed, "kept": kept, "unexpected": unexpected})


def test_processes_racing_put_delete_list_in_one_directory_see_only_storage_errors(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=hammer, args=(str(tmp_path), n, HAMMER_SECONDS, results))
        for n in range(WORKERS)
    ]
    for process in workers:
        process.start()
    reports = [results.get(timeout=60 + HAMMER_SECONDS) for _ in workers]
    for process in workers:
        process.join(timeout=10)
        assert process.exitcode == 0
    escaped = [line for report in reports for line in report["unexpected"]]
    assert not escaped, escaped[:3]
    assert all(report["puts"] > 20 for report in reports), reports  # the race really ran
    storage = LocalDirStorage(tmp_path, BUCKET)
    for report in reports:
        worker = report["worker"]
        kept = [info.key for info in storage.list(f"kept/w{worker}/")]
        assert len(kept) == report["kept"]
        for key in kept:
            assert storage.get_bytes(key) == f"{worker}-{Path(key).stem}".encode()
    assert list(storage.list("race/")) == []  # every racing object was deleted by its writer


# ------------------------------------------------------------------------------- each race, forced


@pytest.fixture
def storage(tmp_path: Path) -> LocalDirStorage:
    return LocalDirStorage(tmp_path, BUCKET)


def remove_folder_first(
    monkeypatch: pytest.MonkeyPatch, name: str, folder: Path, times: int = 1
) -> list[int]:
    """Make `os.<name>` find `folder` removed `times` times, as another process's delete would leave it."""
    real: Callable[..., Any] = getattr(os, name)
    calls: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times and folder.is_dir():
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir()
            folder.rmdir()
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, racing)
    return calls


@pytest.mark.parametrize(
    ("write", "os_call"),
    [
        (lambda s, k: s.put_bytes(k, b"payload"), "replace"),
        (lambda s, k: s.put_stream(k, iter([b"pay", b"load"])), "replace"),
        (lambda s, k: s.put_bytes(k, b"payload", if_absent=True), "link"),
    ],
    ids=["put_bytes", "put_stream", "put_if_absent"],
)
def test_write_succeeds_when_its_folder_is_removed_under_it(
    storage: LocalDirStorage,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[LocalDirStorage, str], str],
    os_call: str,
) -> None:
    key = "segflow-jobs/pending/ab/cd.json"
    calls = remove_folder_first(monkeypatch, os_call, storage.bucket_dir / "segflow-jobs", times=3)
    assert write(storage, key) == hashlib.md5(b"payload").hexdigest().upper()
    assert len(calls) == 4  # three attempts lost their folder, the fourth one landed
    monkeypatch.undo()
    assert storage.get_bytes(key) == b"payload"


def test_put_if_absent_still_has_one_winner_after_a_folder_race(
    storage: LocalDirStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.put_bytes("claims/a/one.json", b"first", if_absent=True)
    with pytest.raises(ObjectExistsError):
        storage.put_bytes("claims/a/one.json", b"second", if_absent=True)
    storage.delete("claims/a/one.json")
    remove_folder_first(monkeypatch, "link", storage.bucket_dir / "claims")
    storage.put_bytes("claims/a/one.json", b"third", if_absent=True)
    assert storage.get_bytes("claims/a/one.json") == b"third"


def test_a_folder_that_never_stays_is_a_storage_error_not_a_loop(
    storage: LocalDirStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    remove_folder_first(monkeypatch, "replace", storage.bucket_dir / "busy", times=10_000)
    with pytest.raises(StorageError) as caught:
        storage.put_bytes("busy/x.json", b"{}")
    assert not isinstance(caught.value, ObjectNotFoundError)
    assert caught.value.http_status == 503 and caught.value.code == "ServiceUnavailable"


def test_object_deleted_between_list_and_head_is_left_out(storage: LocalDirStorage) -> None:
    for name in ("a", "b", "c"):
        storage.put_bytes(f"segflow-jobs/pending/{name}/record.json", b"{}")
    listed: Iterator[Any] = storage.list("segflow-jobs/pending/", page_size=1)
    first = next(listed)
    storage.delete("segflow-jobs/pending/b/record.json")  # its folder goes with it
    rest = [info.key for info in listed]
    assert first.key == "segflow-jobs/pending/a/record.json"
    assert rest == ["segflow-jobs/pending/c/record.json"]


@pytest.mark.parametrize("where", ["folder removed", "parent is a file", "key is a folder"])
def test_every_read_of_a_vanished_object_is_not_found(storage: LocalDirStorage, where: str) -> None:
    storage.put_bytes("incoming/a/b.jpg", b"x")
    key = "incoming/a/b.jpg"
    if where == "folder removed":
        storage.delete(key)
        assert not (storage.bucket_dir / "incoming").exists()
    elif where == "parent is a file":
        storage.delete(key)
        storage.put_bytes("incoming/a", b"file where a folder was")
    else:
        key = "incoming/a"
    for read in (
        lambda: storage.head(key),
        lambda: storage.get_bytes(key),
        lambda: storage.read_range(key, 0, 1),
        lambda: storage.open_stream(key),
    ):
        with pytest.raises(ObjectNotFoundError):
            read()
    storage.delete(key)  # deleting what is not there succeeds, as on OSS
    left = {"folder removed": [], "parent is a file": ["incoming/a"], "key is a folder": ["incoming/a/b.jpg"]}
    assert [info.key for info in storage.list("incoming/")] == left[where]


def test_a_key_below_an_object_or_over_a_folder_is_an_invalid_name(storage: LocalDirStorage) -> None:
    storage.put_bytes("incoming/a", b"file")
    storage.put_bytes("incoming/dir/x", b"file")
    for key in ("incoming/a/b", "incoming/dir"):
        for write in (
            lambda k: storage.put_bytes(k, b"y"),
            lambda k: storage.put_bytes(k, b"y", if_absent=True),
        ):
            with pytest.raises(StorageError) as caught:
                write(key)
            assert caught.value.code == "InvalidObjectName" and caught.value.http_status == 400


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (errno.EACCES, "AccessDenied", 403),
        (errno.EROFS, "AccessDenied", 403),
        (errno.ENOSPC, "InsufficientStorage", 507),
        (errno.EIO, "InternalError", 500),
    ],
)
def test_os_failures_of_writes_and_reads_are_storage_errors_with_codes(
    storage: LocalDirStorage, monkeypatch: pytest.MonkeyPatch, error: int, code: str, status: int
) -> None:
    storage.put_bytes("incoming/a.jpg", b"x")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(StorageError) as caught:
        storage.put_bytes("incoming/b.jpg", b"y")
    assert (caught.value.code, caught.value.http_status) == (code, status)
    monkeypatch.setattr(os, "unlink", failing)
    with pytest.raises(StorageError) as caught:
        storage.delete("incoming/a.jpg")
    assert (caught.value.code, caught.value.http_status) == (code, status)
    monkeypatch.setattr(os, "scandir", failing)
    with pytest.raises(StorageError) as caught:
        list(storage.list("incoming/"))
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert not list((storage.root / ".segflow-tmp").iterdir())  # no temporary file left behind


@pytest.mark.parametrize(
    "prefix",
    ["incoming\x00/", "incoming/" + "x" * 300 + "/", "incoming/" + ("y" * 250 + "/") * 20, "incoming//"],
    ids=["nul", "long name", "long path", "empty segment"],
)
def test_listing_a_prefix_no_file_can_hold_is_empty(storage: LocalDirStorage, prefix: str) -> None:
    storage.put_bytes("incoming/a.jpg", b"x")
    assert list(storage.list(prefix)) == []  # as OSS lists any prefix that matches nothing


def test_bucket_names_of_a_removed_root_are_none(tmp_path: Path) -> None:
    buckets = LocalBuckets(tmp_path / "gone")
    assert buckets.names() == ()
