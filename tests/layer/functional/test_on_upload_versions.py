"""An overwritten object ends with the result of its current version (issue 15 §1).

GIVEN an object overwritten (or deleted) while the paid call or the video job of its earlier version runs
— users re-upload a corrected file under the same key all the time — over a local-directory bucket and
over OSS through oss2 (the stubbed `oss2.Bucket` of tests/support/oss_stub.py),
WHEN the older version's call answers (or its job finishes, or fails) after the newer version was done,
THEN the result under `<output>/<key>/<action>/` and its manifest's Source ETag stay the current version's,
no failure record is written over it, the older attempt ends `superseded` (its record says so, the
summary counts it, a marker under `<jobs>/state/superseded/` lets `segflow status` count it), each version
was paid once, and the older version's event delivered again costs nothing.

What the checks rest on: OSS gives every version of an object a new ETag (OSS API, "Common response
headers": ETag), a HEAD of a deleted object answers 404, and a put-if-absent write
(`x-oss-forbid-overwrite: true`, OSS PutObject) is the only atomic decision OSS offers: the publish lock.
"""

from __future__ import annotations

import io
import json
from typing import Any

import oss2
import pytest
from pytest_mock import MockerFixture

from segflow.errors import SegflowError
from segflow.records import JobRecord
from segflow.storage.oss import OssStorage
from tests.support.fake_api import Reply
from tests.support.media_files import cached_video
from tests.support.oss_stub import ENDPOINT, stub_oss
from tests.support.services_harness import BUCKET, Harness, jpeg, oss_event

IMAGE = "incoming/versions/photo.jpg"
VIDEO = "incoming/versions/clip.mp4"
IMAGE_ACTION = "SegmentCommonImage"
VIDEO_ACTION = "SegmentVideoBody"
V1, V2 = jpeg((320, 240)), jpeg((200, 150))
REFUSED = Reply.error(400, "InvalidImage.Content", "The image cannot be decoded.")


def clips() -> tuple[bytes, bytes]:
    return cached_video("mp4", "libx264", 320, 240, 4), cached_video("mp4", "libx264", 160, 120, 4)


@pytest.fixture(params=["local", "oss"])
def h(request: pytest.FixtureRequest, make: Any, mocker: MockerFixture) -> Harness:
    """The harness over a local-directory bucket, or over OSS through oss2 (its inputs reach the fake
    service the default way on OSS: AuthorizeFileUpload and a form POST to its temporary bucket)."""
    built: Harness = make(input_url="upload")
    if request.param == "oss":
        stub_oss(mocker)
        storage = OssStorage(BUCKET, ENDPOINT, oss2.Auth("test-access-key-id", "test-access-key-secret"))
        built.deps.storage_for = lambda bucket, region=None: storage  # type: ignore[method-assign]
    return built


def records(h: Harness, key: str) -> list[JobRecord]:
    found = [JobRecord.from_json(h.storage.get_bytes(k)) for k in h.keys("segflow-jobs/records/")]
    return sorted((r for r in found if r.key == key), key=lambda r: r.created_at)


def states(h: Harness, key: str) -> dict[str, str]:
    """The state of each version's record, by ETag."""
    return {r.etag: r.state for r in records(h, key)}


def stored_size(h: Harness, key: str) -> tuple[int, int]:
    from PIL import Image

    data = h.storage.get_bytes(f"segmented/{key}/{IMAGE_ACTION}/cutout.png")
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def current(h: Harness, key: str) -> str:
    return h.storage.head(key).etag


def test_a_slow_call_of_an_older_version_never_replaces_the_newer_result(h: Harness) -> None:
    h.put(IMAGE, V1)
    old_etag = current(h, IMAGE)

    def overwrite() -> None:
        h.put(IMAGE, V2)
        assert h.on_upload(oss_event(IMAGE))["done"] == 1

    h.vision.during_next_call(overwrite)
    summary = h.on_upload(oss_event(IMAGE))

    assert (summary["superseded"], summary["done"], summary["outcomes"][0]["outcome"]) == (1, 0, "superseded")
    assert h.manifest(IMAGE, IMAGE_ACTION)["Source"]["ETag"] == current(h, IMAGE)
    assert stored_size(h, IMAGE) == (200, 150) and h.failure(IMAGE) is None
    assert h.vision.calls_for_input(IMAGE_ACTION, V1) == h.vision.calls_for_input(IMAGE_ACTION, V2) == 1
    assert states(h, IMAGE) == {old_etag: "superseded", current(h, IMAGE): "done"}
    assert len(h.keys("segflow-jobs/state/superseded/")) == 1 and len(h.keys("segflow-jobs/state/done/")) == 1
    assert h.keys("segflow-jobs/inflight/") == []

    again = h.on_upload(oss_event(IMAGE))  # the older version's event, delivered again: nothing to pay
    assert again["duplicate"] == 1 and h.api.count(IMAGE_ACTION) == 2


def test_an_object_deleted_during_the_call_ends_superseded_and_nothing_is_written(h: Harness) -> None:
    h.put(IMAGE, V1)
    h.vision.during_next_call(lambda: h.storage.delete(IMAGE))

    summary = h.on_upload(oss_event(IMAGE))

    assert summary["superseded"] == 1
    assert h.results_for(IMAGE) == [] and h.failure(IMAGE) is None
    assert h.keys("segmented/") == [] and h.keys("segflow-failed/") == []
    assert h.keys("segflow-jobs/inflight/") == []


def test_a_failure_of_the_older_version_after_the_newer_one_is_done_is_not_recorded(h: Harness) -> None:
    h.put(IMAGE, V1)

    def overwrite_then_refuse() -> Reply:
        h.put(IMAGE, V2)
        assert h.on_upload(oss_event(IMAGE))["done"] == 1
        return REFUSED

    h.vision.during_next_call(overwrite_then_refuse)
    summary = h.on_upload(oss_event(IMAGE))

    assert (summary["superseded"], summary["failed"]) == (1, 0)
    assert h.failure(IMAGE) is None and h.keys("segflow-failed/") == []
    assert h.manifest(IMAGE, IMAGE_ACTION)["Source"]["ETag"] == current(h, IMAGE)


def test_a_failure_of_the_current_version_still_replaces_an_older_result(h: Harness) -> None:
    """The other way round: a newer version's failure record is the object's outcome, beside the last
    result (whose manifest names the version it belongs to)."""
    h.put(IMAGE, V1)
    assert h.on_upload(oss_event(IMAGE))["done"] == 1
    h.put(IMAGE, V2)
    h.api.queue(IMAGE_ACTION, REFUSED)
    assert h.on_upload(oss_event(IMAGE))["failed"] == 1
    failure = h.failure(IMAGE)
    assert failure is not None and (failure["Code"], failure["ETag"]) == (
        "InvalidImage.Content",
        current(h, IMAGE),
    )


def test_a_video_job_finishing_after_the_newer_versions_job_is_superseded(h: Harness) -> None:
    first, second = clips()
    h.vision.job_statuses = ["PROCESSING"]  # the first (longer) job is still running at the first tick
    h.put(VIDEO, first)
    assert h.on_upload(oss_event(VIDEO))["submitted"] == 1
    h.vision.job_statuses = []
    h.put(VIDEO, second)
    assert h.on_upload(oss_event(VIDEO))["submitted"] == 1

    tick = h.collect()
    assert (tick["done"], tick["pending"]) == (1, 1)
    tick = h.collect()

    assert (tick["superseded"], tick["done"]) == (1, 0)
    assert h.manifest(VIDEO, VIDEO_ACTION)["Source"]["ETag"] == current(h, VIDEO)
    assert h.storage.get_bytes(f"segmented/{VIDEO}/{VIDEO_ACTION}/mask.mp4") == second
    assert h.keys("segflow-jobs/pending/") == [] and h.keys("segflow-jobs/leases/") == []
    assert sorted(states(h, VIDEO).values()) == ["done", "superseded"]
    assert (
        h.vision.calls_for_input(VIDEO_ACTION, first) == h.vision.calls_for_input(VIDEO_ACTION, second) == 1
    )


def test_a_video_deleted_while_its_job_runs_ends_superseded(h: Harness) -> None:
    first, _ = clips()
    h.vision.job_statuses = []
    h.put(VIDEO, first)
    assert h.on_upload(oss_event(VIDEO))["submitted"] == 1
    h.storage.delete(VIDEO)

    tick = h.collect()

    assert tick["superseded"] == 1
    assert h.results_for(VIDEO) == [] and h.failure(VIDEO) is None
    assert h.keys("segflow-jobs/pending/") == []


def test_a_video_job_failing_after_the_newer_version_is_done_is_not_recorded(h: Harness) -> None:
    first, second = clips()
    h.vision.job_statuses = ["PROCESSING", "PROCESS_FAILED"]
    h.put(VIDEO, first)
    h.on_upload(oss_event(VIDEO))
    h.vision.job_statuses = []
    h.put(VIDEO, second)
    h.on_upload(oss_event(VIDEO))
    h.collect()
    tick = h.collect()

    assert (tick["superseded"], tick["failed"]) == (1, 0)
    assert h.failure(VIDEO) is None
    assert h.manifest(VIDEO, VIDEO_ACTION)["Source"]["ETag"] == current(h, VIDEO)


def test_a_refined_mask_replaced_during_the_call_supersedes_the_pair_it_was_made_with(make: Any) -> None:
    """RefineMask: the record is the image's, its ETag both halves' (`<image>+<mask>`); a new mask is a new
    pair, and the call made with the old mask must not replace its result."""
    from tests.layer.functional.test_on_upload_pairs import coarse_mask

    hp: Harness = make(
        rules=({"prefix": "incoming/refine/", "action": "RefineMask", "pair": "{stem}.mask.png"},)
    )
    image, mask = "incoming/refine/photo.jpg", "incoming/refine/photo.mask.png"
    hp.put(image, jpeg((320, 240)))
    assert hp.on_upload(oss_event(image))["waiting"] == 1
    hp.put(mask, coarse_mask((320, 240)))

    def new_mask() -> None:
        hp.put(mask, _other_mask())
        assert hp.on_upload(oss_event(mask))["done"] == 1

    hp.vision.during_next_call(new_mask)
    summary = hp.on_upload(oss_event(mask))

    assert summary["superseded"] == 1
    expected = f"{hp.storage.head(image).etag}+{hp.storage.head(mask).etag}"
    assert hp.manifest(image, "RefineMask")["Source"]["ETag"] == expected


def _other_mask() -> bytes:
    from PIL import Image

    picture = Image.new("RGB", (320, 240), (0, 0, 0))
    picture.paste((255, 255, 255), (160, 0, 320, 240))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_superseded_marker_is_counted_apart(h: Harness) -> None:
    h.put(IMAGE, V1)
    h.vision.during_next_call(lambda: h.storage.delete(IMAGE))
    h.on_upload(oss_event(IMAGE))
    (marker,) = h.keys("segflow-jobs/state/superseded/")
    (record,) = records(h, IMAGE)
    assert marker.endswith(record.record_id) and json.loads(record.to_json())["state"] == "superseded"


def test_a_record_an_overwritten_version_left_submitting_is_closed_superseded_by_the_collector(
    h: Harness,
) -> None:
    """The older version's call failed in a way a retry could fix, then FC gave up on its event (the new
    version's event came instead): the collector's redrive of stalled uploads closes the old record instead
    of sending it again on every tick, and the bucket has no stuck upload."""
    h.put(IMAGE, V1)
    old_etag = current(h, IMAGE)
    h.api.queue(IMAGE_ACTION, *[Reply.error(503, "ServiceUnavailable")] * 4)  # beyond the client's retries
    with pytest.raises(SegflowError):
        h.on_upload(oss_event(IMAGE))
    h.put(IMAGE, V2)
    assert h.on_upload(oss_event(IMAGE))["done"] == 1
    h.clock.advance(h.deps.stall_seconds + 1)

    tick = h.collect()

    assert (tick["redriven"], tick["superseded"]) == (1, 1)
    assert states(h, IMAGE) == {old_etag: "superseded", current(h, IMAGE): "done"}
    assert h.keys("segflow-jobs/inflight/") == []
    assert h.collect()["redriven"] == 0
    assert h.manifest(IMAGE, IMAGE_ACTION)["Source"]["ETag"] == current(h, IMAGE)
    assert h.vision.calls_for_input(IMAGE_ACTION, V2) == 1


def test_an_earlier_version_uploaded_again_gets_its_result_back(h: Harness) -> None:
    """A → B → A: the same bytes as the first version, uploaded again after the second one's result
    replaced the first one's, are the current version; their result is stored again (a new upload: paid
    again), while A's event delivered again once A is back costs nothing."""
    h.put(IMAGE, V1)
    assert h.on_upload(oss_event(IMAGE))["done"] == 1
    h.put(IMAGE, V2)
    assert h.on_upload(oss_event(IMAGE))["done"] == 1
    h.put(IMAGE, V1)

    assert h.on_upload(oss_event(IMAGE))["done"] == 1

    assert h.manifest(IMAGE, IMAGE_ACTION)["Source"]["ETag"] == current(h, IMAGE)
    assert stored_size(h, IMAGE) == (320, 240)
    assert h.vision.calls_for_input(IMAGE_ACTION, V1) == 2 and h.vision.calls_for_input(IMAGE_ACTION, V2) == 1
    assert h.on_upload(oss_event(IMAGE))["duplicate"] == 1 and h.api.count(IMAGE_ACTION) == 3
    assert len(h.keys("segflow-jobs/state/done/")) == 2 and h.keys("segflow-jobs/state/superseded/") == []
