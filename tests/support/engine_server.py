"""Start the local engine in-process for a test, and serve input files on loopback.

    with start_engine(actions=StubActions()) as engine:      # no models: protocol tests
        engine.base_url, engine.endpoint, engine.access_key_id, engine.access_key_secret, engine.appcode
    with start_engine() as engine:                            # the real models (mark the test `engine`)
        ...
    with serve_files({"a.png": png_bytes}) as files:
        files.url("a.png")

`StubActions` stands in for `segflow_engine.actions`: it answers with small PNGs of the input's size,
can hold every call at a gate (to watch a job sit in QUEUING / PROCESSING) and can fail on demand.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from segflow.errors import SegflowError
from segflow.media import probe_media
from segflow.signing import Credentials, sign_v1, sign_v3
from segflow_engine.auth import EngineCredentials
from segflow_engine.server import EngineConfig, EngineServer
from tests.support.loopback_files import answer_file
from tests.support.loopback_http import LoopbackServer

PARSE_FACE_NAMES = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "l_lip")


# -- PNG helpers --------------------------------------------------------------------------------------
def make_png(width: int, height: int, *, channels: int = 4, fill: int = 255) -> bytes:
    """A valid PNG (8 bits per channel; 1 = grey, 3 = RGB, 4 = RGBA) without numpy or PIL."""
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    row = b"\x00" + bytes([fill]) * (width * channels)
    raw = row * height

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


# -- stub actions -------------------------------------------------------------------------------------
@dataclass
class StubElement:
    image: bytes
    box: tuple[int, int, int, int] | None = None
    name: str | None = None
    origin_image: bytes | None = None


@dataclass
class StubOutput:
    image: bytes | None = None
    mask: bytes | None = None
    origin_image: bytes | None = None
    elements: list[StubElement] = field(default_factory=list)
    extension: str = "png"


@dataclass
class StubCall:
    action: str
    params: dict[str, str]
    input_size: int
    extra_images: tuple[str, ...] = ()


class StubActions:
    """A stand-in for `segflow_engine.actions` with no models: fast, deterministic, controllable."""

    ELEMENT_ACTIONS = (
        "SegmentHead",
        "SegmentFace",
        "SegmentHair",
        "SegmentFurniture",
        "SegmentVehicle",
        "RefineMask",
    )

    def __init__(self) -> None:
        self.calls: list[StubCall] = []
        self.gate: threading.Event | None = None  # when set to an Event, every call waits for it
        self.started = threading.Event()  # set when a call begins (after the gate is reached)
        self.failure: Exception | None = None  # raised by every call while set
        self._lock = threading.Lock()

    def hold(self) -> threading.Event:
        """Make calls wait until the returned event is set."""
        self.gate = threading.Event()
        self.started.clear()
        return self.gate

    def _enter(self, call: StubCall) -> None:
        with self._lock:
            self.calls.append(call)
        self.started.set()
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise TimeoutError("stub gate never opened")
        if self.failure is not None:
            raise self.failure

    def run_image_action(
        self, action: str, params: Mapping[str, str], image: bytes, extra_images: Mapping[str, bytes]
    ) -> StubOutput:
        self._enter(StubCall(action, dict(params), len(image), tuple(sorted(extra_images))))
        info = probe_media(lambda offset, length: image[offset : offset + length], len(image))
        width, height = int(info.width or 1), int(info.height or 1)
        cutout = make_png(width, height, channels=4)
        mask = make_png(width, height, channels=1)
        half = (max(1, width // 2), max(1, height // 2))
        if action == "ParseFace":
            return StubOutput(
                origin_image=make_png(width, height, channels=3),
                elements=[StubElement(make_png(width, height, channels=1), name=n) for n in PARSE_FACE_NAMES],
            )
        if action in self.ELEMENT_ACTIONS:
            crop = make_png(*half, channels=4)
            origin = make_png(width, height, channels=3) if action == "SegmentVehicle" else None
            return StubOutput(elements=[StubElement(crop, box=(1, 2, *half), origin_image=origin)])
        if action == "PicWish":
            output_type = int(params.get("output_type", "2") or 2)
            fmt = params.get("format", "png") or "png"
            return StubOutput(
                image=cutout if output_type in (1, 2) else None,
                mask=mask if output_type in (1, 3) else None,
                extension="jpg" if fmt == "jpg" else "png",
            )
        if params.get("ReturnForm") == "mask":
            return StubOutput(image=mask)
        return StubOutput(image=cutout)

    def run_video_action(
        self, action: str, params: Mapping[str, str], src_path: Path, dst_path: Path
    ) -> None:
        self._enter(StubCall(action, dict(params), src_path.stat().st_size))
        shutil.copyfile(src_path, dst_path)  # the "mask video" is the input itself


class FailingActions(StubActions):
    """Stub actions whose model always fails with the given service error."""

    def __init__(self, error: SegflowError) -> None:
        super().__init__()
        self.failure = error


# -- the engine ---------------------------------------------------------------------------------------
@dataclass
class RunningEngine:
    server: EngineServer
    access_key_id: str
    access_key_secret: str
    appcode: str

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def endpoint(self) -> str:
        """`127.0.0.1:PORT`, as the official clients' `Config(endpoint=…)` wants it."""
        return self.server.endpoint

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.access_key_secret)

    @property
    def picwish_url(self) -> str:
        return f"{self.base_url}/tasks/visual/segmentation"

    def stop(self) -> None:
        self.server.shutdown()

    def __enter__(self) -> RunningEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_engine(
    *,
    actions: Any | None = None,
    workers: int = 2,
    access_keys: Mapping[str, str] | None = None,
    appcodes: set[str] | frozenset[str] | None = None,
    state_dir: Path | None = None,
    **config: Any,
) -> RunningEngine:
    """The engine serving on a free 127.0.0.1 port in this process; stop it (or use `with`).

    `actions=None` loads the real models (`segflow_engine.actions`); pass `StubActions()` for protocol
    tests. Extra keyword arguments go to `EngineConfig` (e.g. `result_ttl_seconds=5`). Keys and AppCode
    are random unless given; the first of each is on the returned object.
    """
    credentials = EngineCredentials.build(access_keys, appcodes)
    server_config = EngineConfig(host="127.0.0.1", port=0, workers=workers, state_dir=state_dir, **config)
    server = EngineServer(server_config, credentials, actions).start()
    access_key_id, secret = credentials.first_key
    return RunningEngine(server, access_key_id, secret, credentials.first_appcode)


# -- signed calls --------------------------------------------------------------------------------------
def call_rpc(
    engine: RunningEngine,
    action: str,
    params: Mapping[str, str],
    *,
    version: str = "2019-12-30",
    signature: str = "v1",
    method: str = "GET",
    credentials: Credentials | None = None,
    now: datetime | None = None,
    nonce: str | None = None,
    tamper: Callable[[dict[str, str]], None] | None = None,
    form_body: bool = False,
) -> requests.Response:
    """One signed RPC call to the engine, v1 (parameters in the query, or a form body with `form_body`)
    or v3 (as the official SDK: parameters in the query, headers signed). `tamper` may change the v1
    parameters or the v3 query after signing."""
    creds = credentials or engine.credentials
    url = engine.base_url + "/"
    if signature == "v1":
        signed = sign_v1(
            method, {"Action": action, "Version": version, **params}, creds, now=now, nonce=nonce
        )
        sent = dict(signed.params)
        if tamper:
            tamper(sent)
        if form_body:
            return requests.request(method, url, data=sent, timeout=30)
        return requests.request(method, url, params=sent, timeout=30)
    query = dict(params)
    signed3 = sign_v3(method, engine.endpoint, action, version, query, b"", creds, now=now, nonce=nonce)
    if tamper:
        tamper(query)
    return requests.request(method, url, params=query, headers=signed3.headers, timeout=30)


def make_mp4(width: int = 160, height: int = 120, frames: int = 6) -> bytes:
    """A real H.264 MP4 (grey frames) made with PyAV, for the video actions."""
    import io

    import av
    import numpy as np

    target = io.BytesIO()
    container = av.open(target, "w", format="mp4")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8), format="rgb24")
    for _ in range(frames):
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return target.getvalue()


# -- input files on loopback ---------------------------------------------------------------------------
@dataclass
class LoopbackFiles:
    base_url: str
    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    # name -> HTTP status to answer instead of the file (e.g. 404, 500)
    statuses: dict[str, int] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{quote(name)}"


@contextmanager
def serve_files(files: Mapping[str, bytes]) -> Iterator[LoopbackFiles]:
    """A tiny HTTP file server on 127.0.0.1 serving `files` by name (for inputs fetched by URL)."""
    served = LoopbackFiles("", dict(files))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            from urllib.parse import unquote

            name = unquote(urlsplit(self.path).path.lstrip("/"))
            served.requests.append(name)
            answer_file(self, served.statuses.get(name), served.files.get(name))

        def log_message(self, format: str, *args: Any) -> None:
            return

    with LoopbackServer(Handler) as server:
        served.base_url = server.base_url
        yield served


# -- the `segflow engine` command in a child process ---------------------------------------------------
@dataclass
class EngineProcess:
    """`segflow engine` running in a child process: what `call_rpc` needs, its output and log so far."""

    process: subprocess.Popen[str]
    port: int
    access_key_id: str
    access_key_secret: str
    banner: list[str]
    state_dir: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key_id, self.access_key_secret)

    def stop(self) -> str:
        """SIGTERM, wait, and everything it wrote on stderr."""
        self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return err


@contextmanager
def engine_process(state_dir: Path, *options: str, timeout: float = 120.0) -> Iterator[EngineProcess]:
    """`segflow engine --port <free> --state-dir <state_dir> <options>`, its key pair chosen here; yields
    once it prints that it listens, stops it after (SIGTERM)."""
    from tests.conftest import REPO_ROOT, SOURCE_ROOTS

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    key = ("engine-process-key", "engine-process-secret")
    env = dict(os.environ, SEGFLOW_ENGINE_ACCESS_KEYS=":".join(key))
    env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_ROOTS), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        "segflow_cli",
        "engine",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    process = subprocess.Popen(
        [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    running = EngineProcess(process, port, *key, [], state_dir)
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (line := process.stdout.readline()):
            running.banner.append(line.rstrip("\n"))
            if line.startswith("  inputs:"):  # the banner's last line but the log's
                break
        assert any(line.startswith("segflow engine listening on") for line in running.banner), running.banner
        yield running
    finally:
        if process.poll() is None:
            running.stop()
