"""The local engine under a burst: 30 signed calls at once, each on a new connection, against `segflow engine`
(real models, default options) in a child process, and the engine's memory meanwhile.

Also the round trip of a call that needs no model, and 400 slow clients; figures, baselines and targets:
bench/README.md ("engine_burst.py"). Needs the models (`make models`).
Run: `python bench/engine_burst.py [--quick] [--json]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(__file__))
from _common import REPO_ROOT, Row, child_env, emit, log, parse_args, setup_paths

setup_paths()

BURST = 30
SLOW_CLIENTS = 400
ROUND_TRIPS = 50
TRICKLE_SECONDS = 6.0
TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 4096
ACTIONS = ("SegmentBody", "SegmentCommonImage", "SegmentHead", "SegmentHair", "ParseFace")
ACCESS_KEY = ("bench-burst-key", "bench-burst-secret")


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def rss_mib(pid: int) -> float:
    return proc_status(pid, "VmRSS") / 1024.0


class RssSampler:
    """The highest RSS of a process, sampled every 10 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_engine(state_dir: Path, stderr_path: Path) -> tuple[subprocess.Popen[str], str]:
    """`segflow engine` with default options on a free port; returns once its models are loaded and it
    listens, with its base URL."""
    env = child_env()
    env["SEGFLOW_ENGINE_ACCESS_KEYS"] = ":".join(ACCESS_KEY)
    command = [sys.executable, "-m", "segflow_cli", "engine", "--port", "0", "--state-dir", str(state_dir)]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=str(REPO_ROOT)
        )
    assert process.stdout is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if line.startswith("segflow engine listening on "):
            threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
            return process, line.split()[4]
    process.kill()
    raise RuntimeError("the engine did not start: " + stderr_path.read_text()[-2000:])


def inputs(size: int) -> dict[str, bytes]:
    """One distinct PNG per call (a pixel changed each), so the engine's per-image cache never answers."""
    from tests.support import composites as c

    base = c.person_composite("rocket", size=size).image
    pictures = {}
    for index in range(BURST):
        image = base.copy()
        image[0, index, 0] ^= 0xFF
        pictures[f"p{index}.png"] = c.png_bytes(image)
    return pictures


def burst(base_url: str, urls: list[str]) -> tuple[list[int], list[str]]:
    """All calls released together, each on its own new connection; statuses and unanswered calls."""
    import requests

    from segflow.signing import Credentials, sign_v1

    credentials = Credentials(*ACCESS_KEY)
    barrier = threading.Barrier(len(urls))
    statuses: list[int] = []
    unanswered: list[str] = []

    def call(index: int, url: str) -> None:
        action = ACTIONS[index % len(ACTIONS)]
        params = sign_v1("GET", {"Action": action, "Version": "2019-12-30", "ImageURL": url}, credentials)
        barrier.wait(timeout=30)
        try:
            with requests.Session() as session:  # a new connection, as 30 separate clients would open
                statuses.append(session.get(base_url + "/", params=params.params, timeout=600).status_code)
        except requests.RequestException as exc:
            unanswered.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=call, args=(i, url)) for i, url in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses, unanswered


def one_call(base_url: str, url: str) -> float:
    """Seconds one signed SegmentCommonImage call takes (it must be answered 200)."""
    import requests

    from segflow.signing import Credentials, sign_v1

    query = {"Action": "SegmentCommonImage", "Version": "2019-12-30", "ImageURL": url}
    params = sign_v1("GET", query, Credentials(*ACCESS_KEY))
    started = time.monotonic()
    status = requests.get(base_url + "/", params=params.params, timeout=120).status_code
    if status != 200:
        raise RuntimeError(f"a call answered HTTP {status}")
    return time.monotonic() - started


def round_trip_ms(base_url: str) -> float:
    """Median milliseconds of `ROUND_TRIPS` signed calls that need no model, on one kept-alive session."""
    import requests

    from segflow.signing import Credentials, sign_v1

    credentials = Credentials(*ACCESS_KEY)
    samples = []
    with requests.Session() as session:
        for index in range(ROUND_TRIPS):
            query = {"Action": "GetAsyncJobResult", "Version": "2020-03-20", "JobId": f"none-{index}"}
            params = sign_v1("GET", query, credentials).params
            started = time.perf_counter()
            status = session.get(base_url + "/", params=params, timeout=30).status_code
            samples.append((time.perf_counter() - started) * 1000.0)
            if status != 400:
                raise RuntimeError(f"GetAsyncJobResult of no job answered HTTP {status}")
    return sorted(samples)[len(samples) // 2]


def slow_clients(base_url: str, pid: int, url: str) -> tuple[int, int, float, float, int]:
    """(threads before, most threads, one call alone, the same call meanwhile (s), clients still open)
    with `SLOW_CLIENTS` connections trickling a request head for `TRICKLE_SECONDS`."""
    import socket

    alone = one_call(base_url, url)
    before = proc_status(pid, "Threads")
    port = int(base_url.rsplit(":", 1)[1])
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(SLOW_CLIENTS)]
    most, meanwhile, sent = before, -1.0, 0
    deadline = time.monotonic() + TRICKLE_SECONDS
    try:
        while time.monotonic() < deadline:
            for client in list(clients):
                try:
                    client.send(TRICKLE_HEAD[sent : sent + 1])
                except OSError:  # dropped by the engine
                    clients.remove(client)
                    client.close()
            sent = min(sent + 1, len(TRICKLE_HEAD) - 1)
            most = max(most, proc_status(pid, "Threads"))
            if meanwhile < 0 and sent > 5:
                meanwhile = one_call(base_url, url)
            time.sleep(0.1)
    finally:
        still_open = len(clients)
        for client in clients:
            client.close()
    return before, most, alone, meanwhile, still_open


ISNET_PROBE = """
import sys, threading, time
import numpy as np
from segflow_engine import models
from segflow_engine.segmenters import salient
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS:')).split()[1]) / 1024
before = rss()
segmenter = salient.SalientSegmenter()
loaded = rss()
peak = [loaded]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
for fill in (127, 128):  # onnxruntime plans memory on the first run and applies it from the second
    segmenter.probability(np.full((1024, 1024, 3), fill, np.uint8))
done.set()
print(before, loaded, peak[0])
"""


def isnet_working_set() -> tuple[float, float, float]:
    """(RSS before, after loading ISNet, peak during two 1024² inferences) of a fresh process, MiB."""
    done = subprocess.run(
        [sys.executable, "-c", ISNET_PROBE], capture_output=True, text=True, env=child_env(), check=True
    )
    before, loaded, peak = (float(v) for v in done.stdout.split()[-3:])
    return before, loaded, peak


def measure(size: int) -> list[Row]:
    from tests.support.engine_server import serve_files

    with (
        tempfile.TemporaryDirectory(prefix="segflow-bench-burst-") as tmp,
        serve_files(inputs(size)) as files,
    ):
        stderr_path = Path(tmp) / "engine.stderr"
        process, base_url = start_engine(Path(tmp) / "state", stderr_path)
        try:
            idle = rss_mib(process.pid)
            log(f"engine_burst: engine listening, {idle:.0f} MiB; {BURST} calls at once")
            started = time.monotonic()
            with RssSampler(process.pid) as sampler:
                statuses, unanswered = burst(base_url, [files.url(f"p{i}.png") for i in range(BURST)])
            seconds = time.monotonic() - started
            trip = round_trip_ms(base_url)
            log(f"engine_burst: {SLOW_CLIENTS} slow clients for {TRICKLE_SECONDS:g} s")
            slow = slow_clients(base_url, process.pid, files.url("p0.png"))
        finally:
            process.terminate()
            process.wait(timeout=60)
        tracebacks = stderr_path.read_text().count("Traceback")
    trip_row = Row(
        f"engine: one signed call with no model work, kept-alive connection (median of {ROUND_TRIPS})",
        f"{trip:.1f} ms",
        "(no target)",
        None,
    )
    return [
        *rows(size, idle, sampler.peak, seconds, statuses, unanswered, tracebacks),
        trip_row,
        *slow_rows(*slow),
    ]


def slow_rows(before: int, most: int, alone: float, meanwhile: float, still_open: int) -> list[Row]:
    return [
        Row(
            f"engine: threads while {SLOW_CLIENTS} clients trickle a request head ({TRICKLE_SECONDS:g} s)",
            f"{most} at most vs {before} before ({still_open} clients still connected at the end)",
            "not one more",
            most <= before,
        ),
        Row(
            "engine: one call made while they trickle vs the same call alone",
            f"{meanwhile:.2f} s vs {alone:.2f} s",
            "answered, ≤ 2× + 1 s",
            0 <= meanwhile <= 2 * alone + 1.0,
        ),
    ]


def rows(
    size: int,
    idle: float,
    peak: float,
    seconds: float,
    statuses: list[int],
    unanswered: list[str],
    tracebacks: int,
) -> list[Row]:
    answered = f"{statuses.count(200)} answered 200 of {BURST}" + (
        f", other statuses {sorted(s for s in statuses if s != 200)}" if len(set(statuses)) > 1 else ""
    )
    before, loaded, isnet_peak = isnet_working_set()
    return [
        Row(
            f"engine burst: {BURST} signed calls at once, each on a new connection — calls with no answer",
            f"{len(unanswered)} ({answered}, {seconds:.0f} s)",
            "0 (no reset)",
            not unanswered,
            "; ".join(unanswered[:3]),
        ),
        Row("engine burst: tracebacks on the engine's stderr", str(tracebacks), "0", tracebacks == 0),
        Row(
            f"engine burst: peak RSS ({size}² inputs) vs models loaded and listening",
            f"{peak:.0f} MiB = {peak / idle:.2f}× idle {idle:.0f} MiB",
            "(no target)",
            None,
            "the rest above idle is inference working memory; see the ISNet row",
        ),
        Row(
            "ISNet 1024² alone (fresh process, the engine's session options): loading / two inferences",
            f"+{loaded - before:.0f} MiB loaded, +{isnet_peak - loaded:.0f} MiB more at peak",
            "(what dominates)",
            None,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    from segflow_engine import models

    models.check_installed()
    emit(measure(512 if args.quick else 1024), as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
