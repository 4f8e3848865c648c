"""Parsing the vision APIs' answers (JSON and XML) into typed results — VISION-API.md §1–§3."""

from __future__ import annotations

import json

import pytest

from segflow.errors import JobFailedError
from segflow.results import (
    AsyncJobResult,
    Element,
    as_list,
    async_job_result,
    data_of,
    error_from_document,
    parse_document,
    segment_result,
)

RID = "6A2D9E4F-0C4B-4B8E-9C1D-3E5F7A9B1C2D"


def _json(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode()


# --- imageseg answer shapes (VISION-API.md §2, "response Data" column) ---------------------------------


@pytest.mark.parametrize("action", ["SegmentBody", "SegmentCommodity", "SegmentCommonImage"])
def test_single_image_actions_give_the_top_level_image_url(action: str) -> None:
    document = parse_document(_json({"RequestId": RID, "Data": {"ImageURL": "http://out/a.png"}}))

    result = segment_result(action, document["RequestId"], data_of(document))

    assert result.action == action
    assert result.request_id == RID
    assert result.image_url == "http://out/a.png"
    assert result.elements == ()
    assert result.job_id is None
    assert result.output_urls() == ("http://out/a.png",)


@pytest.mark.parametrize("action", ["SegmentHead", "SegmentFace", "SegmentHair"])
def test_element_actions_give_crops_with_their_position_in_the_source(action: str) -> None:
    data = {
        "Elements": [
            {"ImageURL": "http://out/1.png", "X": 10, "Y": 20, "Width": 64, "Height": 80},
            {"ImageURL": "http://out/2.png", "X": 300, "Y": 5, "Width": 40, "Height": 41},
        ]
    }

    result = segment_result(action, RID, data)

    assert result.elements == (
        Element(image_url="http://out/1.png", x=10, y=20, width=64, height=80),
        Element(image_url="http://out/2.png", x=300, y=5, width=40, height=41),
    )
    assert result.image_url is None
    assert result.output_urls() == ("http://out/1.png", "http://out/2.png")


def test_parse_face_gives_the_origin_image_and_named_parts() -> None:
    names = ["skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "l_lip", "mouth"]
    data = {
        "OriginImageURL": "http://out/origin.png",
        "Elements": [{"Name": name, "ImageURL": f"http://out/{name}.png"} for name in names],
    }

    result = segment_result("ParseFace", RID, data)

    assert result.origin_image_url == "http://out/origin.png"
    assert [element.name for element in result.elements] == names
    assert result.elements[5] == Element(image_url="http://out/nose.png", name="nose")


def test_segment_furniture_reads_the_lower_case_image_url_spelling() -> None:
    result = segment_result("SegmentFurniture", RID, {"Elements": [{"ImageUrl": "http://out/sofa.png"}]})

    assert result.elements == (Element(image_url="http://out/sofa.png"),)


def test_segment_vehicle_elements_carry_both_origin_and_cutout() -> None:
    data = {"Elements": [{"OriginImageURL": "http://out/car.jpg", "ImageURL": "http://out/car.png"}]}

    result = segment_result("SegmentVehicle", RID, data)

    assert result.elements == (
        Element(image_url="http://out/car.png", origin_image_url="http://out/car.jpg"),
    )


def test_refine_mask_gives_the_refined_mask_as_an_element() -> None:
    result = segment_result("RefineMask", RID, {"Elements": [{"ImageURL": "http://out/mask.png"}]})

    assert result.output_urls() == ("http://out/mask.png",)


def test_async_segment_body_without_data_uses_the_request_id_as_job_id() -> None:
    document = parse_document(_json({"RequestId": RID}))

    result = segment_result("SegmentBody", document["RequestId"], data_of(document), is_async=True)

    assert result.job_id == RID
    assert result.is_async
    assert result.output_urls() == ()


def test_async_answer_with_a_job_id_in_data_prefers_it() -> None:
    result = segment_result("SegmentBody", RID, {"JobId": "job-42"}, is_async=True)

    assert result.job_id == "job-42"


@pytest.mark.parametrize("action", ["SegmentVideoBody", "SegmentHalfBody", "SegmentGreenScreenVideo"])
def test_videoseg_submissions_are_jobs_named_by_their_request_id(action: str) -> None:
    result = segment_result(action, RID, {}, is_async=True)

    assert result.job_id == RID
    assert result.request_id == RID


# --- GetAsyncJobResult (VISION-API.md §3) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result_json", "url"),
    [
        ('{"VideoUrl": "http://out/body.mp4"}', "http://out/body.mp4"),  # SegmentVideoBody, SegmentHalfBody
        ('{"VideoURL": "http://out/green.mp4"}', "http://out/green.mp4"),  # SegmentGreenScreenVideo
        ('{"ImageURL": "http://out/body.png"}', "http://out/body.png"),  # imageseg SegmentBody Async
    ],
)
def test_job_result_decodes_the_result_string_and_finds_the_url(result_json: str, url: str) -> None:
    data = {"JobId": "job-1", "Status": "PROCESS_SUCCESS", "Result": result_json}

    job = async_job_result(RID, data)

    assert job.result == json.loads(result_json)
    assert job.result_url() == url
    assert job.succeeded and not job.is_pending and not job.failed
    job.raise_for_failure()  # success: nothing raised


@pytest.mark.parametrize("status", ["QUEUING", "PROCESSING"])
def test_job_still_running_has_no_result(status: str) -> None:
    job = async_job_result(RID, {"JobId": "job-1", "Status": status})

    assert job.is_pending
    assert job.result is None
    assert job.result_url() is None


@pytest.mark.parametrize("status", ["PROCESS_FAILED", "TIMEOUT_FAILED", "LIMIT_RETRY_FAILED"])
def test_failed_job_raises_with_its_own_error_code(status: str) -> None:
    data = {"JobId": "job-1", "Status": status, "ErrorCode": "InvalidFile.Decode", "ErrorMessage": "bad"}
    job = async_job_result(RID, data)

    with pytest.raises(JobFailedError) as caught:
        job.raise_for_failure()

    assert job.failed
    assert caught.value.code == "InvalidFile.Decode"
    assert caught.value.request_id == RID
    assert status in str(caught.value)


def test_failed_job_without_error_code_raises_its_status_as_code() -> None:
    job = async_job_result(RID, {"JobId": "job-1", "Status": "TIMEOUT_FAILED"})

    with pytest.raises(JobFailedError) as caught:
        job.raise_for_failure()

    assert caught.value.code == "TIMEOUT_FAILED"


def test_malformed_result_string_is_kept_raw_instead_of_crashing() -> None:
    job = async_job_result(RID, {"JobId": "j", "Status": "PROCESS_SUCCESS", "Result": "{not json"})

    assert job.result == {"raw": "{not json"}
    assert job.result_url() is None


def test_job_id_falls_back_to_the_one_asked_for() -> None:
    job = async_job_result(RID, {"Status": "QUEUING"}, job_id="asked")

    assert job == AsyncJobResult("asked", "QUEUING", None, None, None, RID)


# --- XML answers (Format=XML, or a proxy that ignores Format) ------------------------------------------


def test_xml_answer_with_repeated_elements_parses_like_json() -> None:
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<SegmentHeadResponse>
  <RequestId>{RID}</RequestId>
  <Data>
    <Elements><ImageURL>http://out/1.png</ImageURL><X>1</X><Y>2</Y><Width>30</Width><Height>40</Height></Elements>
    <Elements><ImageURL>http://out/2.png</ImageURL><X>5</X><Y>6</Y><Width>70</Width><Height>80</Height></Elements>
  </Data>
</SegmentHeadResponse>""".encode()

    document = parse_document(body, "text/xml;charset=utf-8")
    result = segment_result("SegmentHead", document["RequestId"], data_of(document))

    assert result.request_id == RID
    assert result.elements == (
        Element(image_url="http://out/1.png", x=1, y=2, width=30, height=40),
        Element(image_url="http://out/2.png", x=5, y=6, width=70, height=80),
    )


def test_xml_answer_with_a_single_element_is_still_a_list() -> None:
    body = (
        f"<SegmentFurnitureResponse><RequestId>{RID}</RequestId><Data>"
        "<Elements><ImageUrl>http://out/sofa.png</ImageUrl></Elements></Data></SegmentFurnitureResponse>"
    ).encode()

    document = parse_document(body)  # no content type: recognised by the leading "<"
    result = segment_result("SegmentFurniture", RID, data_of(document))

    assert result.elements == (Element(image_url="http://out/sofa.png"),)


def test_xml_elements_wrapped_one_level_deeper_are_unwrapped() -> None:
    body = (
        f"<ParseFaceResponse><RequestId>{RID}</RequestId><Data><OriginImageURL>http://o</OriginImageURL>"
        "<Elements><Element><Name>skin</Name><ImageURL>http://s</ImageURL></Element>"
        "<Element><Name>nose</Name><ImageURL>http://n</ImageURL></Element></Elements></Data></ParseFaceResponse>"
    ).encode()

    result = segment_result("ParseFace", RID, data_of(parse_document(body)))

    assert [(e.name, e.image_url) for e in result.elements] == [("skin", "http://s"), ("nose", "http://n")]
    assert result.origin_image_url == "http://o"


def test_xml_job_result_decodes_the_result_string() -> None:
    body = (
        f"<GetAsyncJobResultResponse><RequestId>{RID}</RequestId><Data><JobId>j1</JobId>"
        "<Status>PROCESS_SUCCESS</Status><Result>{&quot;VideoURL&quot;: &quot;http://v&quot;}</Result>"
        "</Data></GetAsyncJobResultResponse>"
    ).encode()

    job = async_job_result(RID, data_of(parse_document(body)))

    assert job.job_id == "j1"
    assert job.result_url() == "http://v"


def test_xml_error_answer_gives_code_message_and_ids() -> None:
    body = (
        b"<Error><RequestId>R-1</RequestId><HostId>imageseg.cn-shanghai.aliyuncs.com</HostId>"
        b"<Code>InvalidImage.Resolution</Code><Message>too big</Message></Error>"
    )

    error = error_from_document(parse_document(body), 400)

    assert (error.code, error.message, error.http_status, error.request_id, error.host_id) == (
        "InvalidImage.Resolution",
        "too big",
        400,
        "R-1",
        "imageseg.cn-shanghai.aliyuncs.com",
    )


def test_xml_with_a_dtd_is_refused() -> None:
    body = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Error><Code>&a;</Code></Error>'

    with pytest.raises(ValueError, match="DTD"):
        parse_document(body)


def test_json_error_answer_gives_code_message_and_ids() -> None:
    document = parse_document(
        _json({"RequestId": "R-2", "HostId": "videoseg.cn-shanghai.aliyuncs.com", "Code": "InvalidFile.Type"})
    )

    error = error_from_document(document, 400)

    assert error.code == "InvalidFile.Type"
    assert error.host_id == "videoseg.cn-shanghai.aliyuncs.com"
    assert error.request_id == "R-2"


@pytest.mark.parametrize(
    ("status", "code"), [(503, "InternalError"), (429, "Throttling"), (400, "InvalidResponse")]
)
def test_error_answer_without_a_code_gets_one_from_the_status(status: int, code: str) -> None:
    assert error_from_document({}, status).code == code


def test_non_object_json_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_document(b"[1, 2]")


def test_numbers_written_as_text_or_garbage_are_read_safely() -> None:
    result = segment_result("SegmentHead", RID, {"Elements": {"X": "12", "Y": "3.0", "Width": "wide"}})

    assert result.elements == (Element(x=12, y=3, width=None),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, []), ("", []), ([1, 2], [1, 2]), ({"A": "b"}, [{"A": "b"}]), ({"Item": [1]}, [1])],
)
def test_as_list_normalises_every_list_shape(value: object, expected: list[object]) -> None:
    assert as_list(value) == expected
