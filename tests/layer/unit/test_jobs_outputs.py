"""Result key layout, file naming, manifests and failure records (issue 3, "Sync results")."""

from __future__ import annotations

import pytest

from segflow.errors import ApiError
from segflow.layout import BucketLayout
from segflow.outputs import (
    build_manifest,
    content_type_for,
    element_file_name,
    failure_document,
    plan_files,
    url_extension,
    video_file_name,
)
from segflow.records import JobRecord, Payload
from segflow.results import Element, SegmentResult
from segflow.states import RecordStates

DONE = RecordStates.DONE

LAYOUT = BucketLayout.create("segmented", "segflow-jobs/", "segflow-failed")


def test_layout_mirrors_the_source_key_under_the_output_prefix() -> None:
    assert (
        LAYOUT.result_prefix("incoming/a b/猫.png", "SegmentBody")
        == "segmented/incoming/a b/猫.png/SegmentBody/"
    )
    assert (
        LAYOUT.manifest_key("incoming/x.jpg", "SegmentHead")
        == "segmented/incoming/x.jpg/SegmentHead/manifest.json"
    )
    assert LAYOUT.failure_key("incoming/x.jpg") == "segflow-failed/incoming/x.jpg.json"
    assert LAYOUT.work_key("abc", ".png") == "segflow-jobs/work/abc.png"


@pytest.mark.parametrize(
    ("key", "own"),
    [
        ("segmented/incoming/a.jpg/SegmentBody/cutout.png", True),
        ("segflow-jobs/records/x.json", True),
        ("segflow-failed/incoming/a.jpg.json", True),
        ("incoming/segmented/a.jpg", False),
        ("segmentedx/a.jpg", False),
        ("incoming/a.jpg", False),
    ],
)
def test_own_prefixes_are_recognised_exactly(key: str, own: bool) -> None:
    assert LAYOUT.is_own(key) is own


def test_cutout_or_mask_name_follows_return_form() -> None:
    result = SegmentResult(action="SegmentCommonImage", request_id="R", image_url="http://r/x.png")
    assert [f.name for f in plan_files(result, {})] == ["cutout.png"]
    assert [(f.role, f.name) for f in plan_files(result, {"ReturnForm": "mask"})] == [("mask", "mask.png")]


def test_elements_get_one_file_each_named_after_parts_when_named() -> None:
    result = SegmentResult(
        action="ParseFace",
        request_id="R",
        origin_image_url="http://r/o.png",
        elements=(
            Element(image_url="http://r/1.png", name="l_eye"),
            Element(image_url="http://r/2.png", name="l_eye"),
            Element(image_url="http://r/3.png"),
            Element(image_url=None, name="mouth"),
        ),
    )
    names = [f.name for f in plan_files(result, {})]
    assert names == ["origin.png", "l_eye.png", "l_eye-1.png", "element-2.png"]


def test_element_names_cannot_escape_the_result_folder() -> None:
    assert element_file_name(3, "../../etc/passwd") == "etc_passwd.png"
    assert element_file_name(4, "..") == "element-4.png"


def test_video_results_are_named_by_action_and_url_extension() -> None:
    assert video_file_name("SegmentVideoBody", "http://r/job/out.mp4?Expires=1") == "mask.mp4"
    assert video_file_name("SegmentGreenScreenVideo", "http://r/job/out.mov") == "result.mov"
    assert video_file_name("SegmentHalfBody", "http://r/job/out") == "mask.mp4"
    assert url_extension("http://r/a.JPEG", ".png") == ".jpg"
    assert content_type_for("a/b/mask.mp4") == "video/mp4"


def test_manifest_carries_source_etag_action_request_and_times() -> None:
    record = JobRecord(
        record_id="r",
        bucket="segflow-demo",
        key="incoming/a.jpg",
        etag="ETAG",
        action="SegmentHead",
        state=DONE,
        size=10,
        created_at=0.0,
        payload=Payload(submitted_at=60.0, job_id=None),
    )
    elements = [{"X": 1, "Y": 2, "Width": 3, "Height": 4, "Name": None, "File": "element-0.png"}]
    manifest = build_manifest(record, request_id="RID", files=[], elements=elements, completed_at=120.0)
    assert manifest["Source"] == {
        "Bucket": "segflow-demo",
        "Key": "incoming/a.jpg",
        "ETag": "ETAG",
        "Size": 10,
    }
    assert (manifest["Action"], manifest["RequestId"]) == ("SegmentHead", "RID")
    assert (manifest["CreatedAt"], manifest["SubmittedAt"], manifest["CompletedAt"]) == (
        "1970-01-01T00:00:00Z",
        "1970-01-01T00:01:00Z",
        "1970-01-01T00:02:00Z",
    )
    assert manifest["Elements"] == elements


def test_failure_record_has_code_message_request_id_action_and_time() -> None:
    error = ApiError("too fast", code="Throttling.User", http_status=400, request_id="RID")
    document = failure_document(
        bucket="b", key="incoming/a.jpg", etag="E", action="SegmentBody", error=error, at=0.0
    )
    assert document == {
        "Bucket": "b",
        "Key": "incoming/a.jpg",
        "ETag": "E",
        "Action": "SegmentBody",
        "Code": "Throttling.User",
        "Message": "too fast",
        "HttpStatus": 400,
        "RequestId": "RID",
        "Time": "1970-01-01T00:00:00Z",
    }
