"""The loopback fake API itself behaves as its docstring promises (other areas' tests rely on it)."""

from __future__ import annotations

import json

import requests

from tests.support.fake_api import FakeApi, RecordedRequest, Reply


def test_unsigned_requests_are_refused_like_the_service(api: FakeApi) -> None:
    response = requests.post(f"{api.url}/?Action=SegmentBody&ImageURL=x", timeout=5)

    assert response.status_code == 400
    assert response.json()["Code"] == "MissingParameter"
    (seen,) = api.requests
    assert seen.signature_error == "MissingParameter"
    assert seen.params == {"Action": "SegmentBody", "ImageURL": "x"}


def test_verification_can_be_switched_off() -> None:
    with FakeApi(verify=False) as api:
        api.queue("SegmentBody", Reply.ok({"ImageURL": "http://o"}, request_id="R-1"))

        response = requests.get(f"{api.url}/?Action=SegmentBody", timeout=5)

    assert response.json() == {"RequestId": "R-1", "Data": {"ImageURL": "http://o"}}


def test_action_queue_comes_before_the_any_queue_and_the_handler() -> None:
    with FakeApi(verify=False) as api:
        api.queue("*", Reply.ok({"from": "any"}))
        api.queue("SegmentHead", Reply.ok({"from": "action"}))
        api.set_handler(lambda request: Reply.ok({"from": "handler"}))

        answers = [
            requests.get(f"{api.url}/?Action={action}", timeout=5).json()["Data"]["from"]
            for action in ("SegmentHead", "SegmentHead", "SegmentHead", "SegmentFace")
        ]

    assert answers == ["action", "any", "handler", "handler"]


def test_handler_may_fall_through_to_the_default_success() -> None:
    with FakeApi(verify=False) as api:
        api.set_handler(lambda request: None)

        document = requests.get(f"{api.url}/?Action=SegmentFace", timeout=5).json()

    assert document["Data"] == {}
    assert document["RequestId"]


def test_a_failing_handler_is_answered_and_recorded() -> None:
    def broken(request: RecordedRequest) -> Reply:
        raise KeyError("oops")

    with FakeApi(verify=False) as api:
        api.set_handler(broken)

        response = requests.get(f"{api.url}/?Action=SegmentFace", timeout=5)

    assert response.status_code == 500
    assert response.json()["Code"] == "FakeApi.HandlerError"
    assert len(api.handler_errors) == 1


def test_picwish_requests_are_recorded_with_their_body_fields() -> None:
    with FakeApi(appcode="code") as api:
        response = requests.post(
            f"{api.url}/tasks/visual/segmentation",
            data=json.dumps({"image_url": "http://in", "crop": 1}),
            headers={"Authorization": "APPCODE code", "Content-Type": "application/json"},
            timeout=5,
        )

    assert response.json()["data"]["state"] == 1
    (seen,) = api.requests_for("PicWish")
    assert seen.params == {"image_url": "http://in", "crop": "1"}


def test_window_count_sees_bursts() -> None:
    with FakeApi(verify=False) as api:
        for _ in range(4):
            requests.get(f"{api.url}/?Action=SegmentBody", timeout=5)

        assert api.max_requests_in_window(1.0) == 4
        assert api.max_requests_in_window(1e-9) == 1
        assert api.count("SegmentBody") == 4
        api.clear()
        assert api.count() == 0
