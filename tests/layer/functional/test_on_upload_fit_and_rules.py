"""on_upload: the oversize policy, PNG depth conversion, routing rules and crash recovery (issue 3)."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from segflow.deadline import Deadline
from segflow.errors import SegflowError
from segflow.records import JobRecord
from segflow.services.deps import use_handler_deps
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.services_harness import (
    BUCKET,
    Harness,
    ResultServer,
    fc_context,
    jpeg,
    load_handler,
    mp4,
    oss_event,
    use_local_buckets_for_oss,
)


def image_at(h: Harness, key: str) -> Image.Image:
    with Image.open(io.BytesIO(h.storage.get_bytes(key))) as opened:
        opened.load()
        return opened.copy()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_oversize_image_is_fitted_and_the_cutout_has_the_original_size(make: Any) -> None:
    """SegmentCommonImage takes < 1280×1280 (VISION-API.md §2): a 2000×1500 photo is segmented on a copy."""
    h: Harness = make()
    key = "incoming/photos/big.jpg"
    h.put(key, jpeg((2000, 1500)))
    summary = h.on_upload(oss_event(key))
    assert summary["done"] == 1
    (sent,) = h.vision.fetched_sizes
    assert sent[0] < 1280 and sent[1] < 1280
    assert abs(sent[0] / sent[1] - 2000 / 1500) < 0.01
    cutout = image_at(h, f"segmented/{key}/SegmentCommonImage/cutout.png")
    assert (cutout.mode, cutout.size) == ("RGBA", (2000, 1500))
    alpha = cutout.getchannel("A")
    assert (
        alpha.getpixel((100, 750)) == 255 and alpha.getpixel((1900, 750)) == 0
    )  # the fake kept the left half
    fit = h.manifest(key, "SegmentCommonImage")["Fit"]
    assert (fit["OriginalWidth"], fit["OriginalHeight"]) == (2000, 1500)
    assert (fit["WorkWidth"], fit["WorkHeight"]) == sent and fit["Reasons"] == ["resolution"]
    assert h.keys("segflow-jobs/work/") == []  # the fitted copy is removed once the result is stored


def test_reject_policy_records_the_resolution_error_without_calling_the_api(make: Any) -> None:
    h: Harness = make(oversize="reject")
    key = "incoming/photos/big.jpg"
    h.put(key, jpeg((2000, 1500)))
    assert h.on_upload(oss_event(key))["failed"] == 1
    assert h.api.requests == []
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidImage.Resolution"
    assert "1280" in failure["Message"]


def test_sixteen_bit_png_is_converted_under_fit(make: Any) -> None:
    """Spec §1: 8/16/64-bit PNGs are refused; a pipeline may convert them to 24/32-bit instead."""
    h: Harness = make()
    key = "incoming/products/scan16.png"
    h.put(key, png_bytes(Image.linear_gradient("L").resize((300, 200)).convert("I;16")))
    assert h.on_upload(oss_event(key))["done"] == 1
    assert h.manifest(key, "SegmentCommonImage")["Fit"]["Reasons"] == ["png_depth"]
    assert image_at(h, f"segmented/{key}/SegmentCommonImage/cutout.png").size == (300, 200)


def test_palette_png_is_refused_under_reject(make: Any) -> None:
    h: Harness = make(oversize="reject")
    key = "incoming/products/palette.png"
    h.put(key, png_bytes(Image.linear_gradient("L").resize((300, 200)).convert("P")))
    h.on_upload(oss_event(key))
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidImage.Content"
    assert h.api.requests == []


def test_rule_sends_faces_to_segment_head_with_one_file_and_box_per_element(make: Any) -> None:
    h: Harness = make(rules=({"prefix": "incoming/faces/", "action": "SegmentHead"},))
    key = "incoming/faces/team.jpg"
    h.put(key, jpeg((800, 600)))
    assert h.on_upload(oss_event(key))["done"] == 1
    prefix = f"segmented/{key}/SegmentHead/"
    assert h.keys(prefix) == [prefix + "element-0.png", prefix + "element-1.png", prefix + "manifest.json"]
    elements = h.manifest(key, "SegmentHead")["Elements"]
    assert [(e["X"], e["Y"], e["Width"], e["Height"], e["File"]) for e in elements] == [
        (0, 0, 400, 300, "element-0.png"),
        (400, 300, 200, 150, "element-1.png"),
    ]


def test_fitted_element_boxes_and_files_are_in_original_coordinates(make: Any) -> None:
    """SegmentHead takes < 2000×2000 ([B]): a 3000×2000 image is fitted; boxes scale back."""
    h: Harness = make(rules=({"prefix": "incoming/faces/", "action": "SegmentHead"},))
    key = "incoming/faces/wide.jpg"
    h.put(key, jpeg((3000, 2000)))
    assert h.on_upload(oss_event(key))["done"] == 1
    (first, _) = h.manifest(key, "SegmentHead")["Elements"]
    assert (first["X"], first["Y"]) == (0, 0)
    assert abs(first["Width"] - 1500) <= 2 and abs(first["Height"] - 1000) <= 2
    element = image_at(h, f"segmented/{key}/SegmentHead/element-0.png")
    assert element.size == (first["Width"], first["Height"])


def test_parse_face_parts_are_stored_under_their_names(make: Any) -> None:
    h: Harness = make(rules=({"prefix": "incoming/faces/", "action": "ParseFace"},))
    key = "incoming/faces/portrait.jpg"
    h.put(key, jpeg((400, 400)))
    assert h.on_upload(oss_event(key))["done"] == 1
    prefix = f"segmented/{key}/ParseFace/"
    assert h.keys(prefix) == [prefix + n for n in ("manifest.json", "nose.png", "origin.png", "skin.png")]
    assert [e["Name"] for e in h.manifest(key, "ParseFace")["Elements"]] == ["skin", "nose"]


def test_rule_can_choose_picwish_which_has_no_region_rule(make: Any) -> None:
    h: Harness = make(rules=({"suffix": ".png", "action": "PicWish", "params": {"type": "object"}},))
    key = "incoming/products/mug.png"
    h.put(key, png_bytes(Image.new("RGB", (320, 240), (10, 20, 30))))
    assert h.on_upload(oss_event(key, region="cn-beijing"))["done"] == 1
    (call,) = h.api.requests_for("PicWish")
    assert call.params["type"] == "object" and call.headers["authorization"] == "APPCODE test-appcode"
    assert image_at(h, f"segmented/{key}/PicWish/cutout.png").size == (320, 240)


def test_rule_naming_an_unknown_action_fails_that_object_clearly(make: Any) -> None:
    h: Harness = make(rules=({"prefix": "incoming/photos/", "action": "SegmentEverything"},))
    key = "incoming/photos/a.jpg"
    h.put(key, jpeg())
    assert h.on_upload(oss_event(key))["failed"] == 1
    failure = h.failure(key)
    assert failure is not None
    assert (failure["Code"], failure["Action"]) == ("UnsupportedOperation", "SegmentEverything")
    assert h.api.requests == []


def test_video_routed_to_an_image_action_is_a_failure_not_an_api_call(make: Any) -> None:
    h: Harness = make(rules=({"prefix": "incoming/", "action": "SegmentCommonImage"},))
    key = "incoming/videos/clip.mp4"
    h.put(key, mp4())
    h.on_upload(oss_event(key))
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidImage.Content"
    assert h.api.requests == []


def test_async_segment_body_is_queued_and_collected(make: Any) -> None:
    """SegmentBody with Async=true answers with a job to poll with GetAsyncJobResult (VISION-API.md §2)."""
    h: Harness = make(
        rules=({"prefix": "incoming/people/", "action": "SegmentBody", "params": {"Async": True}},)
    )
    key = "incoming/people/me.jpg"
    h.put(key, jpeg((500, 400)))
    assert h.on_upload(oss_event(key))["submitted"] == 1
    (call,) = h.api.requests_for("SegmentBody")
    assert call.params["Async"] == "true"
    h.collect()  # PROCESSING
    assert h.collect()["done"] == 1
    assert image_at(h, f"segmented/{key}/SegmentBody/cutout.png").size == (500, 400)
    assert h.keys("segflow-jobs/pending/") == []


def test_concurrent_duplicate_deliveries_submit_once(make: Any) -> None:
    h: Harness = make()
    key = "incoming/photos/dup.jpg"
    h.put(key, jpeg())
    h.vision.segment_delay = 0.2
    event = oss_event(key)
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(3)

    def deliver() -> None:
        barrier.wait()
        try:
            outcome = h.on_upload(event)["outcomes"][0]["outcome"]
        except SegflowError as error:
            outcome = error.code
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes).count("done") == 1
    assert set(outcomes) <= {"done", "duplicate", "RecordInProgress"}
    assert h.on_upload(event)["outcomes"][0]["outcome"] == "duplicate"  # FC's retry of a busy one
    assert h.api.count("SegmentCommonImage") == 1


def test_record_left_submitting_by_a_crash_is_taken_over_after_its_claim_expires(make: Any) -> None:
    h: Harness = make()
    key = "incoming/photos/crash.jpg"
    h.put(key, jpeg())
    store = h.deps.records(h.storage)
    store.begin(BUCKET, key, h.storage.head(key).etag, "SegmentCommonImage")  # then the instance died
    with pytest.raises(SegflowError) as raised:
        h.on_upload(oss_event(key))
    assert raised.value.code == "RecordInProgress" and h.api.requests == []
    h.clock.advance(h.deps.claim_seconds + 1)
    summary = h.on_upload(oss_event(key))
    assert summary["done"] == 1 and h.api.count("SegmentCommonImage") == 1
    (record_key,) = h.keys("segflow-jobs/records/")
    record = store.load(record_key.rsplit("/", 1)[1][: -len(".json")])
    assert record is not None and (record.state, record.claim.generation, record.claim.attempts) == (
        "done",
        1,
        2,
    )


def test_handler_builds_its_deps_from_the_environment_once(
    tmp_path: Path, api: FakeApi, results: ResultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.services_harness import FakeVision

    FakeVision(api, results)
    root = tmp_path / "buckets"
    use_local_buckets_for_oss(monkeypatch, root)
    for name, value in {
        "SEGFLOW_IMAGESEG_ENDPOINT": api.url,
        "SEGFLOW_VIDEOSEG_ENDPOINT": api.url,
        "SEGFLOW_INPUT_URL": "presign",
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_CREDENTIALS.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_CREDENTIALS.access_key_secret,
    }.items():
        monkeypatch.setenv(name, value)
    use_handler_deps(None)
    from segflow_cli.localbucket import LocalDirStorage

    key = "incoming/photos/env.jpg"
    LocalDirStorage(root, BUCKET).put_bytes(key, jpeg())
    handler = load_handler("on_upload")
    try:
        import json

        first = json.loads(handler.handler(json.dumps(oss_event(key)).encode(), fc_context()))
        second = json.loads(handler.handler(json.dumps(oss_event(key)).encode(), fc_context()))
    finally:
        use_handler_deps(None)
    assert first["done"] == 1 and second["duplicate"] == 1
    assert all(r.signature_error is None for r in api.requests)


def test_fitted_copy_is_removed_when_the_service_refuses_it(make: Any) -> None:
    from tests.support.fake_api import Reply

    h: Harness = make()
    key = "incoming/photos/big-refused.jpg"
    h.put(key, jpeg((2000, 1500)))
    h.api.queue("SegmentCommonImage", Reply.error(400, "InvalidImage.Content", "refused"))
    assert h.on_upload(oss_event(key))["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidImage.Content"
    assert h.keys("segflow-jobs/work/") == []


def test_picwish_url_over_its_512_character_limit_fails_clearly_without_a_call(make: Any) -> None:
    """PicWish: image_url at most 512 characters (VISION-API.md §4)."""
    h: Harness = make(rules=({"action": "PicWish"},))
    key = "incoming/products/" + "/".join(f"folder-{i:02d}" for i in range(50)) + "/mug.png"
    h.put(key, png_bytes(Image.new("RGB", (64, 48), (1, 2, 3))))
    assert h.on_upload(oss_event(key))["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidParameter" and "512" in failure["Message"]
    assert h.api.requests == []


def test_a_claim_lasts_the_invocations_timeout_and_a_margin_then_a_redelivery_takes_it_over(
    make: Any,
) -> None:
    """A claim must outlive its owner, who FC stops at the function's timeout (`context.function.timeout`,
    fc-contract.md): it lasts the invocation's remaining time plus `Deps.claim_margin_seconds`, not a fixed
    900 s, so the object of an owner that died is taken over as soon as that owner is surely gone."""
    h: Harness = make()
    key = "incoming/photos/claimed.jpg"
    h.put(key, jpeg())
    seen: list[float] = []

    def look_at_the_claim() -> None:
        (record_key,) = h.keys("segflow-jobs/records/")
        record = JobRecord.from_json(h.storage.get_bytes(record_key))
        seen.append(record.claim.claimed_until - h.clock())

    h.vision.during_next_call(look_at_the_claim)
    assert h.on_upload(oss_event(key), fc_context(timeout=120))["done"] == 1
    margin = h.deps.claim_margin_seconds
    assert len(seen) == 1 and 120 + margin - 5 < seen[0] <= 120 + margin

    other = "incoming/photos/orphan.jpg"  # its owner died right after the claim
    h.put(other, jpeg())
    store = h.deps.records(h.storage)
    hold = h.deps.hold_seconds(Deadline(120.0))
    store.begin(BUCKET, other, h.storage.head(other).etag, "SegmentCommonImage", hold_seconds=hold)
    h.clock.advance(120 + margin + 1)
    assert h.on_upload(oss_event(other))["done"] == 1
