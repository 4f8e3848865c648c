"""The engine refuses what the service refuses: signatures v1 and v3 checked like imageseg does
(VISION-API.md §1).

GIVEN an engine on loopback with stub models and a known key pair
WHEN  a call is signed correctly, tampered with, stale, replayed, or made with an unknown key
THEN  it is answered, or refused with the service's code and HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from segflow.signing import Credentials
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    serve_files,
    start_engine,
)

KEY_ID, KEY_SECRET = "LTAItestkey0001", "test-secret-0001"


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(64, 48, channels=3)}) as served:
        yield served


@pytest.fixture(scope="module")
def engine() -> Iterator[RunningEngine]:
    with start_engine(actions=StubActions(), access_keys={KEY_ID: KEY_SECRET}) as running:
        yield running


@pytest.mark.parametrize("signature", ["v1", "v3"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_correctly_signed_call_is_answered(
    engine: RunningEngine, files: LoopbackFiles, signature: str, method: str
) -> None:
    response = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, signature=signature, method=method
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"RequestId", "Data"}
    assert body["Data"]["ImageURL"].startswith(engine.base_url + "/results/")


def test_v1_parameters_in_a_form_body_are_accepted(engine: RunningEngine, files: LoopbackFiles) -> None:
    response = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, method="POST", form_body=True
    )
    assert response.status_code == 200, response.text
    assert "ImageURL" in response.json()["Data"]


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_tampered_parameter_is_refused_with_signature_does_not_match(
    engine: RunningEngine, files: LoopbackFiles, signature: str
) -> None:
    def swap_url(params: dict[str, str]) -> None:
        params["ImageURL"] = files.url("photo.png") + "?other"

    response = call_rpc(
        engine,
        "SegmentCommonImage",
        {"ImageURL": files.url("photo.png")},
        signature=signature,
        tamper=swap_url,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["Code"] == "SignatureDoesNotMatch"
    assert set(body) == {"RequestId", "HostId", "Code", "Message"}
    assert KEY_SECRET not in response.text


def test_signature_mismatch_tells_the_servers_string_to_sign_like_the_service(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    # aliyun-python-sdk-core splits this message on ':' and compares the part after it with its own
    # string-to-sign: equal strings mean the caller's secret is wrong, not its signer.
    response = call_rpc(
        engine,
        "SegmentCommonImage",
        {"ImageURL": files.url("photo.png")},
        credentials=Credentials(KEY_ID, "not-the-secret"),
    )
    message = response.json()["Message"]
    prefix, _, string_to_sign = message.partition("server string to sign is:")
    assert prefix.startswith("Specified signature is not matched")
    assert string_to_sign.startswith("GET&%2F&")
    assert "SegmentCommonImage" in string_to_sign
    assert "not-the-secret" not in message and KEY_SECRET not in message


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_wrong_secret_is_refused_with_signature_does_not_match(
    engine: RunningEngine, files: LoopbackFiles, signature: str
) -> None:
    response = call_rpc(
        engine,
        "SegmentCommonImage",
        {"ImageURL": files.url("photo.png")},
        signature=signature,
        credentials=Credentials(KEY_ID, "not-the-secret"),
    )
    assert response.status_code == 400
    assert response.json()["Code"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_timestamp_over_15_minutes_old_is_refused_as_expired(
    engine: RunningEngine, files: LoopbackFiles, signature: str
) -> None:
    # Spec §1: a Timestamp more than 15 minutes off → InvalidTimeStamp.Expired.
    stale = datetime.now(timezone.utc) - timedelta(minutes=16)
    response = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, signature=signature, now=stale
    )
    assert response.status_code == 400
    assert response.json()["Code"] == "InvalidTimeStamp.Expired"


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_timestamp_14_minutes_old_is_still_accepted(
    engine: RunningEngine, files: LoopbackFiles, signature: str
) -> None:
    recent = datetime.now(timezone.utc) - timedelta(minutes=14)
    response = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, signature=signature, now=recent
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_replayed_nonce_is_refused(engine: RunningEngine, files: LoopbackFiles, signature: str) -> None:
    # Spec §1: SignatureNonce must not repeat within 15 minutes → SignatureNonceUsed.
    nonce = f"replay-{signature}-0001"
    first = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, signature=signature, nonce=nonce
    )
    second = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")}, signature=signature, nonce=nonce
    )
    assert first.status_code == 200, first.text
    assert second.status_code == 400
    assert second.json()["Code"] == "SignatureNonceUsed"


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_unknown_access_key_is_refused_with_404(
    engine: RunningEngine, files: LoopbackFiles, signature: str
) -> None:
    response = call_rpc(
        engine,
        "SegmentCommonImage",
        {"ImageURL": files.url("photo.png")},
        signature=signature,
        credentials=Credentials("LTAInobodyknows", KEY_SECRET),
    )
    assert response.status_code == 404
    assert response.json()["Code"] == "InvalidAccessKeyId.NotFound"


def test_unsigned_call_is_refused_with_missing_parameter(engine: RunningEngine, files: LoopbackFiles) -> None:
    import requests

    response = requests.get(
        engine.base_url + "/",
        params={"Action": "SegmentCommonImage", "Version": "2019-12-30", "ImageURL": files.url("photo.png")},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingParameter"


def test_refused_call_never_reaches_the_model(files: LoopbackFiles) -> None:
    stub = StubActions()
    with start_engine(actions=stub, access_keys={KEY_ID: KEY_SECRET}) as running:
        response = call_rpc(
            running,
            "SegmentCommonImage",
            {"ImageURL": files.url("photo.png")},
            credentials=Credentials(KEY_ID, "wrong"),
        )
    assert response.json()["Code"] == "SignatureDoesNotMatch"
    assert stub.calls == []
