"""probe_media on real video files (PyAV) and hand-made container headers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from segflow.media import HEAD_BYTES, MAX_MOOV_BYTES, MediaError, MediaInfo, probe_media
from tests.support.media_files import (
    SparseFile,
    box,
    cached_video,
    encode_video,
    first_box_types,
    flv_header_with_metadata,
    mp4_file,
    mp4_moov,
    reader,
    sparse_from_real,
    sparse_mp4,
)

GB = 1024 * 1024 * 1024


def probe(data: bytes) -> MediaInfo:
    read_at = reader(data)
    info = probe_media(read_at, len(data))
    assert info.bytes_read == read_at.bytes_read
    # at most the 64 KiB head, plus for MP4/MOV the moov box and a 16-byte header per box hopped
    moov = moov_size(data)
    assert info.bytes_read <= HEAD_BYTES + (moov + 16 * len(first_box_types(data)) if moov else 0)
    return info


def moov_size(data: bytes) -> int:
    if data[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide"):
        return 0
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        if kind == b"moov":
            return int(size)
        if size < 8:
            break
        pos += size
    return 0


@pytest.mark.parametrize(
    ("fmt", "codec", "expected", "brand"),
    [
        ("mp4", "libx264", "MP4", "isom/avc1"),
        ("mp4", "mpeg4", "MP4", "isom/mp4v"),
        ("mov", "libx264", "MOV", "qt/avc1"),
        ("matroska", "libx264", "MKV", "matroska"),
        ("webm", "libvpx", "MKV", "webm"),
        ("avi", "mpeg4", "AVI", None),
        ("flv", "flv", "FLV", None),
    ],
)
def test_containers_report_format_size_and_frames(
    fmt: str, codec: str, expected: str, brand: str | None
) -> None:
    info = probe(cached_video(fmt, codec, 96, 64, 5))
    assert (info.format, info.media, info.width, info.height) == (expected, "video", 96, 64)
    assert info.frames == 5
    assert info.fps == pytest.approx(25.0)
    assert info.duration_seconds == pytest.approx(0.2)
    assert info.brand == brand


@pytest.mark.parametrize(
    ("fmt", "codec", "expected", "brand"),
    [
        ("mpegts", "libx264", "TS", "h264"),
        ("mpegts", "mpeg2video", "TS", "mpegvideo"),
        ("mpeg", "mpeg2video", "MPG", "mpegvideo"),
        ("mpeg", "mpeg1video", "MPG", "mpegvideo"),
    ],
)
def test_mpeg_streams_report_size_from_the_sequence_header_or_sps(
    fmt: str, codec: str, expected: str, brand: str
) -> None:
    info = probe(cached_video(fmt, codec, 96, 64, 3))
    assert (info.format, info.width, info.height, info.brand) == (expected, 96, 64, brand)


def test_h264_sps_with_cropping_gives_the_exact_odd_size() -> None:
    info = probe(encode_video("mpegts", "libx264", (101, 75), 1))
    assert (info.width, info.height) == (101, 75)


def test_mp4_with_moov_at_the_tail_reads_the_tail(tmp_path: Path) -> None:
    data = encode_video("mp4", "libx264", (128, 72), 4, path=tmp_path / "tail.mp4")
    assert first_box_types(data)[-1] == b"moov"
    info = probe(data)
    assert (info.width, info.height, info.frames) == (128, 72, 4)


def test_mp4_with_faststart_has_moov_first(tmp_path: Path) -> None:
    data = encode_video(
        "mp4", "libx264", (128, 72), 4, path=tmp_path / "fast.mp4", options={"movflags": "faststart"}
    )
    assert first_box_types(data).index(b"moov") < first_box_types(data).index(b"mdat")
    info = probe(data)
    assert (info.width, info.height, info.frames) == (128, 72, 4)


def test_real_mp4_stretched_to_1_2_gb_reads_only_head_and_moov(tmp_path: Path) -> None:
    """A 1.2 GB video (sparse read_at over a real header): bytes read stay ≤ 64 KiB + the moov box."""
    real = encode_video("mp4", "libx264", (160, 90), 6, path=tmp_path / "real.mp4")
    sparse = sparse_from_real(real, int(1.2 * GB))
    info = probe_media(sparse, sparse.size)
    assert (info.format, info.width, info.height, info.frames) == ("MP4", 160, 90, 6)
    moov_len = len(real) - real.index(b"moov") + 4
    assert sparse.bytes_read <= HEAD_BYTES + moov_len + 64
    assert info.bytes_read == sparse.bytes_read


def test_hand_made_mp4_with_64_bit_mdat_and_moov_at_the_end() -> None:
    sparse = sparse_mp4(5 * GB, width=1920, height=1080, frames=2001)
    info = probe_media(sparse, sparse.size)
    assert (info.width, info.height, info.frames) == (1920, 1080, 2001)
    # the head, the moov box and a 16-byte header read for each box hopped over
    assert info.bytes_read <= HEAD_BYTES + len(mp4_moov(1920, 1080, 2001)) + 2 * 16


@pytest.mark.parametrize("version", [0, 1])
def test_mvhd_mdhd_tkhd_versions_0_and_1(version: int) -> None:
    info = probe(mp4_file(640, 480, 250, version=version))
    assert (info.width, info.height, info.frames) == (640, 480, 250)
    assert info.duration_seconds == pytest.approx(10.0)
    assert info.fps == pytest.approx(25.0)


def test_quicktime_brand_is_mov_and_other_brands_are_mp4() -> None:
    assert probe(mp4_file(64, 64, 1, brand=b"qt  ")).format == "MOV"
    assert probe(mp4_file(64, 64, 1, brand=b"mp42")).format == "MP4"


def test_heic_is_an_image_format_nobody_accepts() -> None:
    info = probe(mp4_file(64, 64, 1, brand=b"heic"))
    assert (info.format, info.media) == ("HEIF", "image")


def test_moov_larger_than_the_cap_is_refused_as_corrupt() -> None:
    ftyp = box(b"ftyp", b"isom\x00\x00\x02\x00isom")
    header = struct.pack(">I", 1) + b"moov" + struct.pack(">Q", MAX_MOOV_BYTES + 17)
    sparse = SparseFile(len(ftyp) + MAX_MOOV_BYTES + 17, {0: ftyp + header})
    with pytest.raises(MediaError, match="larger than") as err:
        probe_media(sparse, sparse.size)
    assert err.value.problem == "corrupt"
    assert sparse.bytes_read <= HEAD_BYTES


def test_mp4_without_moov_is_corrupt() -> None:
    data = box(b"ftyp", b"isom\x00\x00\x02\x00isom") + box(b"mdat", bytes(100))
    with pytest.raises(MediaError, match="no moov") as err:
        probe_media(reader(data), len(data))
    assert err.value.code == "InvalidFile.Decode"


def test_mp4_cut_in_the_moov_is_corrupt(tmp_path: Path) -> None:
    data = encode_video("mp4", "libx264", (64, 48), 2, path=tmp_path / "cut.mp4")
    short = data[: len(data) - 20]
    with pytest.raises(MediaError) as err:
        probe_media(reader(short), len(short))
    assert err.value.problem == "corrupt"


def test_avi_header_cut_short_is_corrupt() -> None:
    data = cached_video("avi", "mpeg4", 96, 64, 5)[:40]
    with pytest.raises(MediaError) as err:
        probe_media(reader(data), len(data))
    assert err.value.problem == "corrupt"


def test_flv_metadata_written_by_hand() -> None:
    data = flv_header_with_metadata({"width": 1280.0, "height": 720.0, "framerate": 30.0, "duration": 10.0})
    info = probe(data)
    assert (info.format, info.width, info.height, info.frames) == ("FLV", 1280, 720, 300)


def test_flv_without_metadata_has_unknown_size() -> None:
    data = b"FLV\x01\x01" + struct.pack(">I", 9) + bytes(4)
    info = probe(data)
    assert (info.format, info.width, info.height) == ("FLV", None, None)


def test_ebml_with_an_unknown_doctype_is_not_matroska() -> None:
    doctype = b"\x42\x82" + bytes((0x80 | 4,)) + b"abcd"
    data = b"\x1a\x45\xdf\xa3" + bytes((0x80 | len(doctype),)) + doctype
    with pytest.raises(MediaError) as err:
        probe_media(reader(data), len(data))
    assert err.value.problem == "format"


def test_ts_that_loses_sync_is_not_ts() -> None:
    data = bytearray(cached_video("mpegts", "libx264", 96, 64, 3))
    data[188] = 0x00
    with pytest.raises(MediaError) as err:
        probe_media(reader(bytes(data)), len(data))
    assert err.value.problem == "format"


def test_video_probe_reads_at_most_the_head_for_head_formats() -> None:
    for fmt, codec in (("matroska", "libx264"), ("avi", "mpeg4"), ("mpegts", "libx264"), ("flv", "flv")):
        data = cached_video(fmt, codec, 96, 64, 3)
        sparse = SparseFile(500 * 1024 * 1024, {0: data})
        info = probe_media(sparse, sparse.size)
        assert info.width == 96
        assert sparse.bytes_read <= HEAD_BYTES
