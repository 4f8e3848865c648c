"""RefineMask on upload: an image and its coarse mask, paired by name, make one call.

RefineMask takes `ImageURL` and `MaskImageURL` (the coarse mask of the same image; imageseg API
reference, RefineMask). A rule `{"action": "RefineMask", "pair": "{stem}.mask.png"}` pairs `photo.jpg` with
`photo.mask.png`: whichever arrives second triggers the call with both URLs, the first waits in a record;
a partner that never comes within `pair_timeout` becomes a failure record naming the missing file; the
same mask uploaded again is a duplicate, not a second call; both inputs are checked against RefineMask's
limits (JPEG PNG BMP, < 3 MB, > 32 and < 2000 per side) before the call.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from segflow.errors import ConfigError
from segflow.routing import parse_rules, route
from tests.support.fake_api import FakeApi
from tests.support.services_harness import Harness, ResultServer, harness, jpeg, oss_event

RULES = (
    {"prefix": "incoming/refine/", "action": "RefineMask", "pair": "{stem}.mask.png", "pair_timeout": 600},
)
IMAGE = "incoming/refine/photo.jpg"
MASK = "incoming/refine/photo.mask.png"


@pytest.fixture
def hp(tmp_path: Path, api: FakeApi, results: ResultServer) -> Harness:
    return harness(tmp_path / "buckets", api, results, rules=RULES)


def coarse_mask(size: tuple[int, int] = (320, 240)) -> bytes:
    """A coarse mask as a user would make it: an RGB PNG, white where the subject is (24-bit: no 8-bit
    PNG, which RefineMask refuses)."""
    from PIL import Image

    image = Image.new("RGB", size, (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def gif(size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, "GIF")
    return buffer.getvalue()


def refine_calls(api: FakeApi) -> list[dict[str, str]]:
    return [r.params for r in api.requests_for("RefineMask")]


@pytest.mark.parametrize("first", ["image", "mask"])
def test_the_second_half_to_arrive_makes_the_one_call_with_both_urls(hp: Harness, first: str) -> None:
    order = [(IMAGE, jpeg((320, 240))), (MASK, coarse_mask())]
    if first == "mask":
        order.reverse()
    (k1, d1), (k2, d2) = order
    hp.put(k1, d1)
    waiting = hp.on_upload(oss_event(k1))
    assert waiting["waiting"] == 1 and refine_calls(hp.api) == []
    assert len(hp.keys(hp.deps.layout.pairs_prefix)) == 1

    hp.put(k2, d2)
    done = hp.on_upload(oss_event(k2))

    assert done["done"] == 1
    (params,) = refine_calls(hp.api)
    assert "photo.jpg" in params["ImageURL"] and "photo.mask.png" in params["MaskImageURL"]
    manifest = hp.manifest(IMAGE, "RefineMask")  # the result belongs to the image
    assert manifest["Source"]["ETag"] == f"{hp.storage.head(IMAGE).etag}+{hp.storage.head(MASK).etag}"
    assert hp.keys(hp.deps.layout.pairs_prefix) == [] and hp.failure(IMAGE) is None
    assert hp.results_for(MASK) == []


def test_the_same_mask_uploaded_again_is_a_duplicate_not_a_second_call(hp: Harness) -> None:
    hp.put(IMAGE, jpeg((320, 240)))
    hp.put(MASK, coarse_mask())
    assert hp.on_upload(oss_event(IMAGE))["done"] == 1  # the mask was there before the image's event
    again = hp.on_upload(oss_event(MASK))  # the mask uploaded again, same bytes
    assert again["duplicate"] == 1 and len(refine_calls(hp.api)) == 1


def test_a_partner_that_never_comes_becomes_a_failure_record_naming_it(hp: Harness) -> None:
    hp.put(IMAGE, jpeg((320, 240)))
    assert hp.on_upload(oss_event(IMAGE))["waiting"] == 1
    hp.collect()
    assert hp.failure(IMAGE) is None  # still within the pair's 600 s
    hp.clock.advance(601)
    hp.collect()
    failure = hp.failure(IMAGE)
    assert failure is not None and failure["Code"] == "PairMissing" and MASK in failure["Message"]
    assert hp.keys(hp.deps.layout.pairs_prefix) == [] and refine_calls(hp.api) == []


def test_a_partner_whose_event_was_lost_is_found_when_the_wait_runs_out(hp: Harness) -> None:
    hp.put(IMAGE, jpeg((320, 240)))
    assert hp.on_upload(oss_event(IMAGE))["waiting"] == 1
    hp.put(MASK, coarse_mask())  # uploaded, but its event never reached the function
    hp.clock.advance(601)
    hp.collect()
    assert len(hp.results_for(IMAGE)) == 1 and hp.failure(IMAGE) is None
    assert len(refine_calls(hp.api)) == 1


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (lambda: gif((320, 240)), "InvalidImage.Content"),  # RefineMask takes JPEG, PNG or BMP
        (lambda: coarse_mask((2400, 1800)), "InvalidImage.Resolution"),  # not < 2000 per side
    ],
    ids=["gif", "too-large"],
)
def test_a_mask_beyond_refinemasks_limits_fails_the_pair_before_any_call(
    hp: Harness, mask: Any, code: str
) -> None:
    hp.put(IMAGE, jpeg((320, 240)))
    hp.put(MASK, mask())
    assert hp.on_upload(oss_event(MASK))["failed"] == 1
    failure = hp.failure(IMAGE)
    assert failure is not None and failure["Code"] == code and "mask" in failure["Message"]
    assert refine_calls(hp.api) == []


def test_pairing_rules_are_checked_at_start() -> None:
    with pytest.raises(ConfigError):
        parse_rules([{"action": "SegmentHead", "pair": "{stem}.mask.png"}])
    with pytest.raises(ConfigError):
        parse_rules([{"action": "RefineMask", "pair": "mask.png"}])
    with pytest.raises(ConfigError):
        parse_rules([{"action": "RefineMask", "pair": "{stem}.mask.png", "pair_timeout": 0}])
    (rule,) = parse_rules(list(RULES))
    as_mask = route(MASK, "image", [rule])
    as_image = route(IMAGE, "image", [rule])
    assert as_mask is not None and as_mask.pair is not None and as_mask.pair.role == "mask"
    assert as_image is not None and as_image.pair is not None and as_image.pair.mask_key == MASK
