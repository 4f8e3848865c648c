"""The official Alibaba Cloud clients talk to the local engine as to the service (issue 4, "Done when").

GIVEN the engine with its real models on loopback, and scikit-image's astronaut photo on a loopback server
WHEN  alibabacloud-imageseg20191230 (v3 signatures), alibabacloud-videoseg20200320 and
      aliyun-python-sdk-core's CommonRequest (v1 signatures) call it
THEN  they parse its answers into their own response models, the result URLs download as media of the right
      size, and a request altered in transit is refused with SignatureDoesNotMatch.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
import requests

from tests.support.engine_server import LoopbackFiles, RunningEngine, png_size, serve_files, start_engine

pytestmark = pytest.mark.engine

REGION = "cn-shanghai"
PARSE_FACE_ALWAYS = {"skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "u_lip", "l_lip"}
VIDEO_SIZE = (256, 192)
VIDEO_FRAMES = 8


def _astronaut_png() -> bytes:
    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "PNG")
    return buffer.getvalue()


def _astronaut_mp4() -> bytes:
    """A few frames of the astronaut panning sideways, H.264 in MP4."""
    import av
    import numpy as np
    from skimage import data

    width, height = VIDEO_SIZE
    photo = data.astronaut()
    target = io.BytesIO()
    container = av.open(target, "w", format="mp4")
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for index in range(VIDEO_FRAMES):
        crop = np.ascontiguousarray(photo[0:height, 40 + index * 4 : 40 + index * 4 + width])
        for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return target.getvalue()


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"astronaut.png": _astronaut_png(), "astronaut.mp4": _astronaut_mp4()}) as served:
        yield served


@pytest.fixture(scope="module")
def engine() -> Iterator[RunningEngine]:
    with start_engine(workers=2) as running:
        yield running


def _config(engine: RunningEngine, secret: str | None = None) -> Any:
    from alibabacloud_tea_openapi.models import Config

    return Config(
        access_key_id=engine.access_key_id,
        access_key_secret=secret or engine.access_key_secret,
        endpoint=engine.endpoint,
        protocol="http",
        region_id=REGION,
        connect_timeout=5000,
        read_timeout=120000,
    )


@pytest.fixture(scope="module")
def imageseg(engine: RunningEngine) -> Any:
    from alibabacloud_imageseg20191230.client import Client

    return Client(_config(engine))


def _download(url: str) -> bytes:
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def test_segment_common_image_with_the_official_v3_client(imageseg: Any, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models

    response = imageseg.segment_common_image(
        models.SegmentCommonImageRequest(image_url=files.url("astronaut.png"))
    )
    assert response.status_code == 200
    assert len(response.body.request_id) == 36
    cutout = _download(response.body.data.image_url)
    assert png_size(cutout) == (512, 512)
    assert cutout[25] == 6  # PNG colour type 6: RGBA, the 4-channel cut-out the spec documents


def test_segment_common_image_mask_form_with_the_official_client(imageseg: Any, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models

    request = models.SegmentCommonImageRequest(image_url=files.url("astronaut.png"), return_form="mask")
    mask = _download(imageseg.segment_common_image(request).body.data.image_url)
    assert png_size(mask) == (512, 512)
    assert mask[25] == 0  # one grey channel


def test_segment_body_with_the_official_v3_client(imageseg: Any, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models

    response = imageseg.segment_body(models.SegmentBodyRequest(image_url=files.url("astronaut.png")))
    cutout = _download(response.body.data.image_url)
    assert png_size(cutout) == (512, 512)


def test_segment_head_with_the_official_v3_client(imageseg: Any, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models

    response = imageseg.segment_head(models.SegmentHeadRequest(image_url=files.url("astronaut.png")))
    elements = response.body.data.elements
    assert len(elements) == 1  # one astronaut, one head
    (head,) = elements
    assert head.width > 50 and head.height > 50
    assert 0 <= head.x < 512 and 0 <= head.y < 512
    assert head.x + head.width <= 512 and head.y + head.height <= 512
    assert png_size(_download(head.image_url)) == (head.width, head.height)


def test_parse_face_with_the_official_v3_client(imageseg: Any, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models

    response = imageseg.parse_face(models.ParseFaceRequest(image_url=files.url("astronaut.png")))
    data = response.body.data
    assert png_size(_download(data.origin_image_url)) == (512, 512)
    names = {element.name for element in data.elements}
    assert names >= PARSE_FACE_ALWAYS
    for element in data.elements:
        assert element.image_url.startswith("http://127.0.0.1:")
    skin = next(element for element in data.elements if element.name == "skin")
    assert png_size(_download(skin.image_url)) == (512, 512)


def test_segment_video_body_and_get_async_job_result_with_the_official_client(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    from alibabacloud_videoseg20200320 import models
    from alibabacloud_videoseg20200320.client import Client

    client = Client(_config(engine))
    submitted = client.segment_video_body(
        models.SegmentVideoBodyRequest(video_url=files.url("astronaut.mp4"))
    )
    job_id = submitted.body.request_id
    deadline = time.monotonic() + 120
    status = ""
    while time.monotonic() < deadline:
        polled = client.get_async_job_result(models.GetAsyncJobResultRequest(job_id=job_id)).body.data
        status = polled.status
        if status in ("PROCESS_SUCCESS", "PROCESS_FAILED"):
            break
        time.sleep(0.25)
    assert status == "PROCESS_SUCCESS", (polled.error_code, polled.error_message)
    assert polled.job_id == job_id
    result = json.loads(polled.result)
    video = _download(result["VideoUrl"])
    assert video[4:8] == b"ftyp"

    import av

    with av.open(io.BytesIO(video), mode="r") as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == VIDEO_SIZE
        assert len(list(container.decode(stream))) == VIDEO_FRAMES


def test_common_request_v1_with_aliyun_python_sdk_core(engine: RunningEngine, files: LoopbackFiles) -> None:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(engine.access_key_id, engine.access_key_secret, REGION)
    request = CommonRequest()
    request.set_domain(engine.endpoint)
    request.set_protocol_type("http")
    request.set_version("2019-12-30")
    request.set_action_name("SegmentCommonImage")
    request.set_method("POST")
    request.add_query_param("ImageURL", files.url("astronaut.png"))
    body = json.loads(client.do_action_with_exception(request))
    assert set(body) == {"RequestId", "Data"}
    assert png_size(_download(body["Data"]["ImageURL"])) == (512, 512)


def test_request_altered_in_transit_is_refused_with_signature_does_not_match(
    imageseg: Any, files: LoopbackFiles
) -> None:
    from alibabacloud_imageseg20191230 import models
    from alibabacloud_tea_openapi.exceptions import ClientException
    from darabonba.core import DaraCore

    real_transport = DaraCore.do_action

    def tamper(request: Any, runtime: Any) -> Any:
        request.query["ImageURL"] = files.url("astronaut.png") + "?swapped=1"
        return real_transport(request, runtime)

    with (
        mock.patch.object(DaraCore, "do_action", staticmethod(tamper)),
        pytest.raises(ClientException) as refused,
    ):
        imageseg.segment_body(models.SegmentBodyRequest(image_url=files.url("astronaut.png")))
    assert refused.value.code == "SignatureDoesNotMatch"
    assert refused.value.status_code == 400


def test_wrong_secret_is_refused_for_the_v1_client(engine: RunningEngine, files: LoopbackFiles) -> None:
    # aliyun-python-sdk-core splits a SignatureDoesNotMatch message on ':' to find the server's
    # string-to-sign (it crashes with IndexError when there is none): the engine's message has it.
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcore.request import CommonRequest

    client = AcsClient(engine.access_key_id, "not-the-secret", REGION, auto_retry=False)
    request = CommonRequest()
    request.set_domain(engine.endpoint)
    request.set_protocol_type("http")
    request.set_version("2019-12-30")
    request.set_action_name("SegmentBody")
    request.add_query_param("ImageURL", files.url("astronaut.png"))
    with pytest.raises(ServerException) as refused:
        client.do_action_with_exception(request)
    assert refused.value.get_error_code() == "SignatureDoesNotMatch"
    assert "server string to sign is:GET&%2F&" in refused.value.get_error_msg()
    assert refused.value.get_http_status() == 400
