"""The codes an unreadable file carries come from the catalogue, before and after the action is known."""

from __future__ import annotations

import pytest

from segflow.catalogue import IMAGESEG_CODES, PICWISH_CODES, VIDEOSEG_CODES, ErrorCodes, get_action
from segflow.media import MediaError, probe_media
from segflow.validation import media_error_for_action
from tests.support.media_files import mp4_file, png, reader

# An EBML header whose DocType is neither "matroska" nor "webm": EBML, but not a video we know.
_EBML_OTHER_DOCTYPE = b"\x1a\x45\xdf\xa3\x86\x42\x82\x83foo"


@pytest.mark.parametrize(
    ("data", "size", "problem", "code"),
    [
        (b"", 0, "empty", VIDEOSEG_CODES.empty),
        (b"%PDF-1.7\n", 9, "format", VIDEOSEG_CODES.format),
        (_EBML_OTHER_DOCTYPE, len(_EBML_OTHER_DOCTYPE), "format", VIDEOSEG_CODES.format),
        (png(30, 20)[:30], 30, "corrupt", IMAGESEG_CODES.corrupt),
        (mp4_file(64, 48, 5)[:100], 100, "corrupt", VIDEOSEG_CODES.corrupt),
    ],
    ids=["empty", "unknown-magic", "ebml-other-doctype", "truncated-png", "truncated-mp4"],
)
def test_probe_failure_carries_the_catalogue_code_for_its_media(
    data: bytes, size: int, problem: str, code: str
) -> None:
    """Before routing: imageseg's code for a corrupt image, videoseg's InvalidFile.* for anything else."""
    with pytest.raises(MediaError) as err:
        probe_media(reader(data), size)
    assert (err.value.problem, err.value.code) == (problem, code)


@pytest.mark.parametrize("codes", [IMAGESEG_CODES, VIDEOSEG_CODES, PICWISH_CODES], ids=lambda c: c.format)
def test_each_probe_problem_names_one_field_of_a_products_codes(codes: ErrorCodes) -> None:
    assert codes.for_problem("format") == codes.format
    assert codes.for_problem("empty") == codes.empty
    assert codes.for_problem("corrupt") == codes.corrupt


@pytest.mark.parametrize(
    ("action", "code"),
    [("SegmentCommonImage", "InvalidImage.Content"), ("SegmentVideoBody", "InvalidFile.Content")],
)
def test_an_empty_file_takes_the_code_of_the_action_chosen_later(action: str, code: str) -> None:
    with pytest.raises(MediaError) as err:
        probe_media(reader(b""), 0)
    mapped = media_error_for_action(get_action(action), err.value)
    assert (mapped.kind, mapped.code) == ("empty", code)
