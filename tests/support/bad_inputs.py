"""The bad-input corpus (issue 6): uploads and events on_upload must survive without crashing.

Each `BadInput` says what to put in the bucket, which event to deliver, which settings apply and how the
record must end: one failure record with a specific code (`failed`), a deliberate skip with a code
(`skipped`), one result (`done`, for inputs that look bad but are fitted), or — for a payload that is not
an OSS event at all — a clean return with nothing written (`ignored`). `api_calls` is how many calls the
vision API may see: validation happens before any paid call, so almost always none.

Codes are the services' own (VISION-API.md §2/§3 error tables, catalogue.py
`IMAGESEG_CODES` / `VIDEOSEG_CODES`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support import media_files as mf
from tests.support.fake_api import Reply
from tests.support.services_harness import jpeg, mp4, oss_event, oss_record

GiB = 1024**3

Event = Callable[[str], "Mapping[str, Any] | bytes"]


@dataclass(frozen=True)
class Sparse:
    """A file of `size` bytes on disk with real bytes only at the head and the tail (a sparse file)."""

    size: int
    head: bytes
    tail: bytes


@dataclass(frozen=True)
class BadInput:
    name: str
    key: str
    """The decoded key the object is stored under (and the failure record is named after)."""
    data: Callable[[], bytes | Sparse] | None
    """What to store; None leaves the bucket empty."""
    outcome: str  # failed | skipped | done | ignored
    code: str | None
    event: Event | None = None
    """The payload to deliver, given the key; default: one ObjectCreated record for `key`."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    api_calls: int = 0
    scripted: tuple[tuple[str, Reply], ...] = ()
    """Replies the fake API gives (action, reply) — what the real service answers for this input."""

    def payload(self) -> Mapping[str, Any] | bytes:
        return self.event(self.key) if self.event is not None else oss_event(self.key)


# ------------------------------------------------------------------------------------ builders


def _text() -> bytes:
    return b"this is plain text, not an image\n" * 8


def _html() -> bytes:
    return b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body></html>\n"


def _noise() -> bytes:
    return bytes((i * 97 + 13) % 256 for i in range(4096))


def _gif() -> bytes:
    return mf.pillow_image("GIF", (64, 64), "P")


def _tiff() -> bytes:
    return mf.pillow_image("TIFF", (64, 64))


def _cmyk_jpeg() -> bytes:
    return mf.pillow_image("JPEG", (64, 64), "CMYK")


def _ftyp() -> bytes:
    return mf.box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isommp41")


def _huge_video(size: int) -> Callable[[], Sparse]:
    """A real MP4 header (ftyp + 64-bit mdat) with the moov at the tail, `size` bytes on disk."""

    def build() -> Sparse:
        moov = mf.mp4_moov(640, 360, 100)
        mdat = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", size - len(_ftyp()) - len(moov))
        return Sparse(size, _ftyp() + mdat, moov)

    return build


def _record_without(*path: str) -> Event:
    def build(key: str) -> Mapping[str, Any]:
        record = oss_record(key)
        node: Any = record
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
        return {"events": [record]}

    return build


def _record_with(value: Any, *path: str) -> Event:
    def build(key: str) -> Mapping[str, Any]:
        record = oss_record(key)
        node: Any = record
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        return {"events": [record]}

    return build


def _raw(payload: bytes) -> Event:
    return lambda _key: payload


def _event_for(raw_key: str, *, region: str = "cn-shanghai") -> Event:
    return lambda _key: oss_event(raw_key, region=region)


REJECT = {"oversize": "reject"}

# ------------------------------------------------------------------------------------ the corpus

CORPUS: tuple[BadInput, ...] = (
    # -- images that are not images, or not whole ------------------------------------------------------
    BadInput("empty-image", "incoming/bad/empty.jpg", lambda: b"", "failed", "InvalidImage.Content"),
    BadInput(
        "jpeg-cut-before-its-size",
        "incoming/bad/cut.jpg",
        lambda: jpeg()[:20],
        "failed",
        "InvalidImage.Content",
    ),
    BadInput(
        "png-cut-in-ihdr",
        "incoming/bad/cut.png",
        lambda: mf.png(64, 64)[:30],
        "failed",
        "InvalidImage.Content",
    ),
    BadInput(
        # The header is whole, so sizes pass; the service itself refuses the body: one call, no retries.
        "jpeg-truncated-after-header",
        "incoming/bad/half.jpg",
        lambda: jpeg()[:300],
        "failed",
        "InvalidImage.Content",
        api_calls=1,
        scripted=(("SegmentCommonImage", Reply.error(400, "InvalidImage.Content", "image decode failed")),),
    ),
    BadInput("text-named-jpg", "incoming/bad/notes.jpg", _text, "failed", "InvalidImage.Content"),
    BadInput("html-error-page-named-png", "incoming/bad/page.png", _html, "failed", "InvalidImage.Content"),
    BadInput("wrong-magic-noise", "incoming/bad/noise.webp", _noise, "failed", "InvalidImage.Content"),
    BadInput(
        "webp-cut-in-header",
        "incoming/bad/cut.webp",
        lambda: mf.pillow_image("WEBP", (64, 64))[:20],
        "failed",
        "InvalidImage.Content",
    ),
    BadInput(
        "bmp-cut-in-header",
        "incoming/bad/cut.bmp",
        lambda: mf.pillow_image("BMP", (64, 64))[:12],
        "failed",
        "InvalidImage.Content",
    ),
    # -- formats and pixel layouts the service refuses (VISION-API.md §2: no GIF, no 8/16/64-bit PNG) -------
    BadInput(
        "gif-under-reject", "incoming/bad/anim.gif", _gif, "failed", "InvalidImage.Content", settings=REJECT
    ),
    BadInput(
        "tiff-under-reject", "incoming/bad/scan.tif", _tiff, "failed", "InvalidImage.Content", settings=REJECT
    ),
    BadInput(
        "png-16-bit-gray-under-reject",
        "incoming/bad/deep.png",
        lambda: mf.png(64, 64, depth=16, color_type=0),
        "failed",
        "InvalidImage.Content",
        settings=REJECT,
    ),
    BadInput(
        "png-8-bit-gray-under-reject",
        "incoming/bad/gray.png",
        lambda: mf.png(64, 64, color_type=0),
        "failed",
        "InvalidImage.Content",
        settings=REJECT,
    ),
    BadInput(
        "png-64-bit-rgba-under-reject",
        "incoming/bad/rgba16.png",
        lambda: mf.png(64, 64, depth=16, color_type=6),
        "failed",
        "InvalidImage.Content",
        settings=REJECT,
    ),
    # CMYK JPEG is a JPEG the spec does not refuse: it is segmented, once.
    BadInput("cmyk-jpeg", "incoming/odd/cmyk.jpg", _cmyk_jpeg, "done", None, api_calls=1),
    # GIF under the default `fit` policy is converted to a format the service takes.
    BadInput("gif-under-fit", "incoming/odd/anim.gif", _gif, "done", None, api_calls=1),
    # -- sizes ----------------------------------------------------------------------------------------
    BadInput(
        # SegmentCommonImage: < 1280×1280 (VISION-API.md §2, SegmentCommonImage).
        "image-1x20000-under-reject",
        "incoming/bad/strip.png",
        lambda: mf.png(1, 20000),
        "failed",
        "InvalidImage.Resolution",
        settings=REJECT,
    ),
    BadInput(
        "image-1x20000-under-fit",
        "incoming/odd/strip.png",
        lambda: mf.png(1, 20000),
        "done",
        None,
        api_calls=1,
    ),
    BadInput(
        # ≤ 3 MB (VISION-API.md §2, SegmentCommonImage) → InvalidParameter.TooLarge.
        "png-over-3-MB-under-reject",
        "incoming/bad/big.png",
        lambda: mf.png(100, 100, total_size=4 * 1024 * 1024),
        "failed",
        "InvalidParameter.TooLarge",
        settings=REJECT,
    ),
    BadInput(
        "png-zero-width", "incoming/bad/zero.png", lambda: mf.png(0, 10), "failed", "InvalidImage.Content"
    ),
    BadInput(
        # A 100000×100000 header in a tiny file: fitting it must not decode 10^10 pixels.
        "png-decompression-bomb-header-under-fit",
        "incoming/bad/bomb.png",
        lambda: mf.png(100_000, 100_000, pixels=False),
        "failed",
        "InvalidImage.Resolution",
    ),
    BadInput(
        # SegmentHead: > 32×32 (VISION-API.md §2, SegmentHead).
        "image-10x10-for-segment-head-under-reject",
        "incoming/bad/tiny.png",
        lambda: mf.png(10, 10),
        "failed",
        "InvalidImage.Resolution",
        settings={**REJECT, "rules": ({"action": "SegmentHead"},)},
    ),
    # -- videos ---------------------------------------------------------------------------------------
    BadInput("empty-video", "incoming/bad/empty.mp4", lambda: b"", "failed", "InvalidFile.Content"),
    BadInput(
        "mp4-ftyp-then-garbage",
        "incoming/bad/garbage.mp4",
        lambda: _ftyp() + b"\xff" * 500,
        "failed",
        "InvalidFile.Decode",
    ),
    BadInput(
        "mp4-without-moov",
        "incoming/bad/nomoov.mp4",
        lambda: _ftyp() + mf.box(b"mdat", bytes(100)),
        "failed",
        "InvalidFile.Decode",
    ),
    BadInput(
        # SegmentVideoBody: ≤ 2000 frames (VISION-API.md §3, SegmentVideoBody).
        "mp4-3000-frames",
        "incoming/bad/long.mp4",
        lambda: mf.mp4_file(640, 360, 3000),
        "failed",
        "InvalidFile.Content",
    ),
    BadInput(
        # SegmentVideoBody: ≤ 1 GB (VISION-API.md §3); a sparse 1.2 GB file, only its header read.
        "mp4-1.2-GB-sparse",
        "incoming/bad/huge.mp4",
        _huge_video(int(1.2 * GiB)),
        "failed",
        "InvalidFile.Content",
    ),
    BadInput(
        # SegmentVideoBody takes MP4 AVI FLV MOV only.
        "mkv-for-segment-video-body",
        "incoming/bad/clip.mkv",
        lambda: mf.cached_video("matroska", "libx264", 64, 64),
        "failed",
        "InvalidFile.Type",
    ),
    BadInput(
        "avi-riff-header-only",
        "incoming/bad/clip.avi",
        lambda: b"RIFF\0\0\0\0AVI LIST" + bytes(50),
        "failed",
        "InvalidFile.Decode",
    ),
    BadInput(
        "flv-header-only",
        "incoming/bad/clip.flv",
        lambda: b"FLV\x01\x01\0\0\0\x09",
        "failed",
        "InvalidFile.Decode",
    ),
    BadInput(
        "video-routed-to-an-image-action",
        "incoming/bad/clip.mp4",
        mp4,
        "failed",
        "InvalidImage.Content",
        settings={"rules": ({"action": "SegmentCommonImage"},)},
    ),
    # -- keys -----------------------------------------------------------------------------------------
    BadInput("chinese-key-with-garbage", "incoming/照片/坏图.jpg", _text, "failed", "InvalidImage.Content"),
    BadInput(
        "url-encoded-key-with-garbage",
        "incoming/bad/a b+c%.jpg",
        _text,
        "failed",
        "InvalidImage.Content",
        event=_event_for("incoming/bad/a+b%2Bc%25.jpg"),
    ),
    BadInput("key-under-output-prefix", "segmented/incoming/x.jpg/cutout.png", jpeg, "skipped", "OwnOutput"),
    BadInput("key-under-jobs-prefix", "segflow-jobs/records/x.json", jpeg, "skipped", "OwnOutput"),
    BadInput("key-under-failed-prefix", "segflow-failed/incoming/x.jpg.json", jpeg, "skipped", "OwnOutput"),
    BadInput(
        # A trigger on the whole bucket must not make segflow process (and pay for) everything in it.
        "key-outside-the-input-prefix",
        "uploads/elsewhere/photo.jpg",
        jpeg,
        "skipped",
        "OutsideInputPrefix",
    ),
    BadInput("object-deleted-before-the-event", "incoming/bad/gone.jpg", None, "skipped", "NoSuchKey"),
    BadInput(
        # A valid OSS key a local directory cannot hold: refused once, not retried forever.
        "key-with-dot-dot-segment",
        "incoming/../escape.jpg",
        None,
        "skipped",
        "InvalidObjectName",
    ),
    # -- events ---------------------------------------------------------------------------------------
    BadInput(
        # imageseg reads only OSS in cn-shanghai → InvalidImage.Region (VISION-API.md §1), without a call.
        "image-in-a-beijing-bucket",
        "incoming/bad/beijing.jpg",
        jpeg,
        "failed",
        "InvalidImage.Region",
        event=_event_for("incoming/bad/beijing.jpg", region="cn-beijing"),
    ),
    BadInput(
        "video-in-a-hangzhou-bucket",
        "incoming/bad/hangzhou.mp4",
        mp4,
        "failed",
        "InvalidFile.Region",
        event=_event_for("incoming/bad/hangzhou.mp4", region="cn-hangzhou"),
    ),
    BadInput(
        "record-without-object-key",
        "incoming/bad/nokey.jpg",
        jpeg,
        "skipped",
        "InvalidEvent",
        event=_record_without("oss", "object", "key"),
    ),
    BadInput(
        "record-without-bucket",
        "incoming/bad/nobucket.jpg",
        jpeg,
        "skipped",
        "InvalidEvent",
        event=_record_without("oss", "bucket"),
    ),
    BadInput(
        "record-with-text-size",
        "incoming/bad/size.jpg",
        jpeg,
        "skipped",
        "InvalidEvent",
        event=_record_with("abc", "oss", "object", "size"),
    ),
    BadInput(
        "record-that-is-not-an-object",
        "incoming/bad/x.jpg",
        None,
        "skipped",
        "InvalidEvent",
        event=_raw(b'{"events": [42]}'),
    ),
    BadInput(
        "invalid-json-event",
        "incoming/bad/x.jpg",
        None,
        "ignored",
        "InvalidEvent",
        event=_raw(b"{not json"),
    ),
    BadInput(
        "event-that-is-a-list",
        "incoming/bad/x.jpg",
        None,
        "ignored",
        "InvalidEvent",
        event=_raw(b"[1, 2]"),
    ),
    BadInput(
        "event-without-events-list",
        "incoming/bad/x.jpg",
        None,
        "ignored",
        "InvalidEvent",
        event=_raw(b'{"Records": []}'),
    ),
    # -- configuration --------------------------------------------------------------------------------
    BadInput(
        "unknown-action-in-a-rule",
        "incoming/bad/rule.jpg",
        jpeg,
        "failed",
        "UnsupportedOperation",
        settings={"rules": ({"action": "SegmentEverything"},)},
    ),
)
