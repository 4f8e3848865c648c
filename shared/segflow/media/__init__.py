"""Format sniffing and header parsing through a "read bytes at offset" callable.

`probe_media` never looks at a file name: the format comes from the magic bytes, the dimensions (and for
video the frame count, duration and rate) from the headers. It reads the first 64 KiB once; beyond that it
only makes small reads for box/segment headers and, for an MP4/MOV whose `moov` sits at the end, the `moov`
box itself (capped at 64 MiB). Nothing is allocated from a declared dimension, so a header that claims
100000×100000 pixels costs nothing.

Modules: `probe` (sniffing and dispatch), `base` (`MediaInfo`, `MediaError`, the counted reader), and one
per container family: `images` (JPEG, PNG, GIF, BMP, WEBP, TIFF), `isobmff` (MP4, MOV, HEIF), `avi`, `flv`,
`matroska` (MKV, WebM) and `mpeg` (MPEG-TS, MPEG-PS), each imported the first time a file of that family
is probed (an instance that only ever sees photos never loads the video parsers).
"""

from __future__ import annotations

from segflow.media.base import HEAD_BYTES, MAX_MOOV_BYTES, MediaError, MediaInfo, ReadAt
from segflow.media.probe import probe_media

__all__ = ["HEAD_BYTES", "MAX_MOOV_BYTES", "MediaError", "MediaInfo", "ReadAt", "probe_media"]
