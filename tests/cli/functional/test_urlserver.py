"""The background URL server of a bucket directory: outlives its callers, is shared, stops by itself.

GIVEN a bucket directory and processes that sign URLs of its objects through `BackgroundUrls` (what
`segflow invoke` does)
WHEN they exit, race to start it, sign more, leave it idle, kill it, expose its key or forge requests
THEN the URLs stay fetchable for as long as they are valid (and no longer), one server serves the
directory, it stops once every URL it signed has expired and it was idle, a dead server's state is
detected (and its unexpired URLs served again), and only the holder of the key can make it sign.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow_cli.localbucket import LocalBuckets
from segflow_cli.urlserver import (
    AUTH_HEADER,
    LOG_FILE,
    SIGN_PATH,
    STATE_FILE,
    BackgroundUrls,
    State,
    mac,
    read_state,
    server_alive,
    state_dir_of,
    stop_background_server,
)
from tests.conftest import SOURCE_ROOTS

BUCKET = "segflow-demo"
KEY = "incoming/videos/clip 01.mp4"
DATA = bytes(range(256)) * 40


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "buckets"
    LocalBuckets(directory)(BUCKET).put_bytes(KEY, DATA)
    yield directory
    stop_background_server(directory)
    assert not server_alive(state_dir_of(directory))


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A GET the way the engine fetches (no proxy for loopback); 0 when nothing listens."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):  # refused, or reset by a process on its way out
        return 0, b""


def sign_in_child(root: Path, key: str = KEY, seconds: int = 600, idle: float = 60.0) -> str:
    """A process like `segflow invoke`: signs one URL through the background server, then exits."""
    code = (
        "import sys; from pathlib import Path; from segflow_cli.localbucket import LocalBuckets; "
        "from segflow_cli.urlserver import BackgroundUrls; root = Path(sys.argv[1]); "
        f"urls = BackgroundUrls(root, idle_seconds={idle}); "
        f"print(LocalBuckets(root, presign_server=urls)({BUCKET!r}).presign_get(sys.argv[2], {seconds}))"
    )
    env = dict(os.environ)
    paths = list(map(str, SOURCE_ROOTS))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), key], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def state_of(root: Path) -> State:
    state, why = read_state(state_dir_of(root))
    assert state is not None, why
    return state


def wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] == "Z"


def kill_and_wait(root: Path, state: State) -> None:
    """SIGKILL the server and wait until its lock is free: that is when its last thread (and socket) is
    gone; its main thread shows as a zombie a little earlier."""
    os.kill(state.pid, signal.SIGKILL)
    assert wait_until(lambda: not server_alive(state_dir_of(root)), 10)


def test_urls_outlive_the_process_that_signed_them(root: Path) -> None:
    url = sign_in_child(root)
    assert url.startswith("http://127.0.0.1:") and "Signature=" in url
    assert http_get(url) == (200, DATA)
    assert http_get(url, {"Range": "bytes=10-19"}) == (206, DATA[10:20])
    assert http_get(url.replace("clip%2001", "clip%2002"))[0] == 403
    assert http_get(url.replace("Expires=", "Expires=1"))[0] == 403


def test_a_second_caller_reuses_the_running_server(root: Path) -> None:
    first = sign_in_child(root)
    pid = state_of(root).pid
    second = sign_in_child(root, seconds=900)
    assert state_of(root).pid == pid
    assert first.split("/r0/")[0] == second.split("/r0/")[0]  # one port
    assert state_of(root).until >= int(time.time()) + 899  # the longest-lived URL sets its lifetime


def test_callers_racing_to_start_it_start_exactly_one(root: Path) -> None:
    urls: list[str] = []
    barrier = threading.Barrier(6)

    def sign() -> None:
        presigner = BackgroundUrls(root)
        barrier.wait()
        urls.append(presigner.presign(root, BUCKET, KEY, 600))

    threads = [threading.Thread(target=sign) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(urls) == 6 and len({url.split("/r0/")[0] for url in urls}) == 1
    assert all(http_get(url)[0] == 200 for url in urls)
    log = (state_dir_of(root) / LOG_FILE).read_text(encoding="utf-8")
    assert log.count(" serving ") == 1, log


def test_it_stops_by_itself_once_its_urls_expired_and_it_was_idle(root: Path) -> None:
    url = sign_in_child(root, seconds=2, idle=0.5)
    state = state_of(root)
    assert http_get(url)[0] == 200
    assert wait_until(lambda: pid_gone(state.pid), 15), "the server did not stop"
    assert not (state_dir_of(root) / STATE_FILE).exists()
    assert http_get(url)[0] == 0  # expired and nobody listens any more
    again = sign_in_child(root)  # a later invoke starts a new one
    assert state_of(root).pid != state.pid and http_get(again)[0] == 200


def test_a_killed_servers_state_is_detected_and_its_urls_work_again(root: Path) -> None:
    url = sign_in_child(root)
    killed = state_of(root)
    kill_and_wait(root, killed)
    assert http_get(url)[0] == 0
    assert (state_dir_of(root) / STATE_FILE).exists() and not server_alive(state_dir_of(root))
    sign_in_child(root, key="incoming/other.mp4")  # the next invoke finds the state stale
    successor = state_of(root)
    assert successor.pid != killed.pid and successor.key == killed.key
    if successor.port == killed.port:
        assert http_get(url) == (200, DATA)
    else:  # another program on this machine took the port meanwhile: the server says so in its log
        assert "is taken" in (state_dir_of(root) / LOG_FILE).read_text(encoding="utf-8")


def test_its_key_is_private_and_an_exposed_one_is_not_trusted(root: Path) -> None:
    url = sign_in_child(root)
    state_dir = state_dir_of(root)
    assert state_dir.stat().st_mode & 0o777 == 0o700
    assert (state_dir / STATE_FILE).stat().st_mode & 0o777 == 0o600
    killed = state_of(root)
    kill_and_wait(root, killed)
    (state_dir / STATE_FILE).chmod(0o644)  # anyone could have read the key: its URLs must die with it
    assert read_state(state_dir)[0] is None
    fresh = sign_in_child(root)
    assert state_of(root).key != killed.key
    assert http_get(fresh)[0] == 200 and http_get(url)[0] != 200


def test_only_the_key_holder_can_make_it_sign(root: Path) -> None:
    sign_in_child(root)
    state = state_of(root)
    body = json.dumps({"bucket": BUCKET, "key": KEY, "expires_seconds": 600}).encode()

    def post(payload: bytes, auth: str) -> tuple[int, dict[str, object], str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{state.port}{SIGN_PATH}", data=payload, headers={AUTH_HEADER: auth}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, json.loads(response.read()), response.headers[AUTH_HEADER]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read()), exc.headers[AUTH_HEADER]

    assert post(body, "0" * 64)[0] == 403
    assert post(body, mac(b"another key" * 3, "sign", body))[0] == 403
    status, answer, proof = post(body, mac(state.key, "sign", body))
    assert status == 200 and http_get(str(answer["url"]))[0] == 200
    assert proof == mac(state.key, "signed", json.dumps(answer).encode())  # the answer is authenticated
    escaping = json.dumps({"bucket": BUCKET, "key": "../../etc/passwd", "expires_seconds": 60}).encode()
    assert post(escaping, mac(state.key, "sign", escaping))[0] == 400
    forever = json.dumps({"bucket": BUCKET, "key": KEY, "expires_seconds": 10**9}).encode()
    assert post(forever, mac(state.key, "sign", forever))[0] == 400


def test_it_runs_without_the_callers_credentials_and_outside_its_session(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "caller-secret-value-0123456789")
    url = sign_in_child(root)
    pid = state_of(root).pid
    environ = Path(f"/proc/{pid}/environ")
    if environ.exists():
        assert b"caller-secret-value" not in environ.read_bytes()
    # Closing the terminal of `segflow invoke` (SIGHUP to its session) leaves the server running.
    assert os.getsid(pid) != os.getsid(0)
    assert http_get(url)[0] == 200
