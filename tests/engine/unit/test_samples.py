"""`segflow run --samples` keeps the samples an earlier run wrote (README, "What make demo does").

x264 does not always encode the same frames to the same bytes from one process to the next (seen on the
green-screen clip), so rewriting a sample made a new version of a file the user had already run, and a
second `make demo` uploaded it again.
"""

from __future__ import annotations

from pathlib import Path

from segflow_engine.samples import write_samples


def test_a_second_call_keeps_every_sample_and_writes_only_a_missing_one(tmp_path: Path) -> None:
    first = write_samples(tmp_path, frames=4)
    assert len(first) == 6 and all(path.is_file() and path.stat().st_size > 0 for path in first)
    before = {path: path.read_bytes() for path in first}
    stamps = {path: path.stat().st_mtime_ns for path in first}
    gone = tmp_path / "greenscreen" / "green-screen.mp4"
    gone.unlink()

    second = write_samples(tmp_path, frames=4)

    assert second == first
    assert gone.is_file() and gone.stat().st_size > 0
    for path in first:
        if path != gone:
            assert path.stat().st_mtime_ns == stamps[path], f"{path.name} was written again"
            assert path.read_bytes() == before[path]
