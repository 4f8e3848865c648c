"""PicWish's cut-out API as the API Market serves it: request fields, the answer envelope and state codes.

`POST /tasks/visual/segmentation` with `Authorization: APPCODE <code>`, a JSON or form body. The HTTP status
only says the request was taken; the outcome is `data.state`: 1 done, -8 timeout, -7 invalid image,
-5 over 15 MB, -3 download failed, -2 upload failed, -1 cut-out failed. Bad parameters are HTTP 400, a bad
AppCode 401 (the gateway's `X-Ca-Error-Message` header says why), an unknown task 404.
The engine always finishes the task before answering (the real service does so within 1–2 s); the answer
can be read again with `GET /tasks/visual/segmentation/<task_id>` while its links are valid (1 hour).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from segflow_engine.protocol import HttpAnswer, render_json

PATH = "/tasks/visual/segmentation"
MAX_URL_CHARS = 512

STATE_DONE = 1
STATE_TIMEOUT = -8
STATE_INVALID_IMAGE = -7
STATE_TOO_LARGE = -5
STATE_DOWNLOAD_FAILED = -3
STATE_UPLOAD_FAILED = -2
STATE_FAILED = -1

TYPES = ("", "person", "object", "stamp")
OUTPUT_IMAGE_AND_MASK, OUTPUT_IMAGE, OUTPUT_MASK = 1, 2, 3


class PicWishBadRequest(Exception):
    """The request itself is wrong: answered with an HTTP error status, no task made."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PicWishRequest:
    image_url: str
    type: str = ""
    output_type: int = OUTPUT_IMAGE
    crop: int = 0
    format: str = "png"
    bg_color: str | None = None

    def action_params(self) -> dict[str, str]:
        """The fields as the string parameters `run_image_action` takes."""
        params = {
            "image_url": self.image_url,
            "type": self.type,
            "output_type": str(self.output_type),
            "crop": str(self.crop),
            "format": self.format,
        }
        if self.bg_color:
            params["bg_color"] = self.bg_color
        return params


def parse_request(content_type: str, body: bytes, query: Mapping[str, str]) -> PicWishRequest:
    """The task fields from a JSON or urlencoded body (query parameters fill in what the body lacks)."""
    fields: dict[str, Any] = dict(query)
    kind = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PicWishBadRequest(400, "the body is not UTF-8") from None
    if text.strip():
        if kind == "application/json" or (not kind and text.lstrip().startswith("{")):
            try:
                decoded = json.loads(text)
            except json.JSONDecodeError:
                raise PicWishBadRequest(400, "the body is not valid JSON") from None
            if not isinstance(decoded, dict):
                raise PicWishBadRequest(400, "the JSON body must be an object")
            fields.update(decoded)
        else:
            fields.update(parse_qsl(text, keep_blank_values=True))
    image_url = str(fields.get("image_url") or "").strip()
    if not image_url:
        raise PicWishBadRequest(400, "image_url is required")
    if len(image_url) > MAX_URL_CHARS:
        raise PicWishBadRequest(400, f"image_url is longer than {MAX_URL_CHARS} characters")
    try:
        chosen = options(fields)
    except ValueError as exc:
        raise PicWishBadRequest(400, str(exc)) from None
    return PicWishRequest(image_url, *chosen)


class PicWishOptions(NamedTuple):
    type: str
    output_type: int
    crop: int
    format: str
    bg_color: str | None


def options(fields: Mapping[str, Any]) -> PicWishOptions:
    """The task's options as the PicWish page documents them (VISION-API.md §4): `type` empty (automatic),
    person, object or stamp; `output_type` 1, 2 or 3; `crop` 0 or 1; `format` png or jpg; `bg_color` a hex
    RGB colour. The one check of them, for the HTTP API and for the action alike; ValueError says which
    is wrong."""
    kind = str(fields.get("type") or "").strip().lower()
    if kind not in TYPES:
        raise ValueError(f"type must be one of person, object, stamp or empty, not {kind!r}")
    output_type = _int_option(fields, "output_type", OUTPUT_IMAGE, (1, 2, 3))
    crop = _int_option(fields, "crop", 0, (0, 1))
    fmt = str(fields.get("format") or "png").strip().lower()
    if fmt not in ("png", "jpg"):
        raise ValueError(f"format must be png or jpg, not {fmt!r}")
    bg_color = str(fields.get("bg_color") or "").strip().lstrip("#") or None
    if bg_color is not None and (
        len(bg_color) not in (3, 6) or any(c not in "0123456789abcdefABCDEF" for c in bg_color)
    ):
        raise ValueError("bg_color must be a hex RGB colour such as ffffff")
    return PicWishOptions(kind, output_type, crop, fmt, bg_color)


def _int_option(fields: Mapping[str, Any], name: str, default: int, allowed: tuple[int, ...]) -> int:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError(f"{name} must be one of {allowed}, not {raw!r}") from None
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, not {value}")
    return value


def new_task_id() -> str:
    return str(uuid.uuid4())


def now_ms() -> int:
    return int(time.time() * 1000)


def task_data(
    request: PicWishRequest,
    task_id: str,
    *,
    state: int,
    created_at: int,
    image: str | None = None,
    mask: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """`data` of an answer. Links only for what `output_type` asked for."""
    finished = now_ms()
    data: dict[str, Any] = {
        "task_id": task_id,
        "state": state,
        "progress": 100 if state == STATE_DONE else 0,
        "output_type": request.output_type,
        "return_type": 1,  # links, not inline data
        "type": request.type or "auto",
        "result_type": request.format,
        "created_at": created_at,
        "processed_at": created_at,
        "completed_at": finished,
    }
    if state == STATE_DONE:
        if request.output_type in (OUTPUT_IMAGE_AND_MASK, OUTPUT_IMAGE):
            data["image"] = image
        if request.output_type in (OUTPUT_IMAGE_AND_MASK, OUTPUT_MASK):
            data["mask"] = mask
    elif detail:
        data["state_detail"] = detail
    return data


def envelope(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": 200, "message": "success", "data": dict(data)}


def error_envelope(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "message": message}


def not_served(served: list[str]) -> HttpAnswer:
    """An engine built without PicWish refuses it as the API Market refuses an AppCode that may not call
    the API: HTTP 401 with the gateway's `X-Ca-Error-Message` (PicWish documents 400, 401, 404, 413, 429 and
    500, no 403), before anything is fetched. segflow reads it as `PicWish.Unauthorized`, a deployment
    fault: the upload waits for a package with PicWish instead of being recorded as a bad input, as an
    unserved RPC action (403 `InvalidApi.NotPurchase`) does."""
    message = f"Unauthorized: this engine does not serve PicWish (it serves {', '.join(served)})"
    answer = render_json(401, error_envelope(401, message))
    return HttpAnswer(answer.status, answer.content_type, answer.body, (("X-Ca-Error-Message", message),))


def state_for_code(code: str) -> int:
    """Which failure state a refused input or a failed run becomes (codes from fetch and validation)."""
    if code.endswith(".Download"):
        return STATE_DOWNLOAD_FAILED
    if code.endswith("TooLarge"):
        return STATE_TOO_LARGE
    if code.startswith(("PicWish.Invalid", "InvalidImage", "InvalidParameter")):
        return STATE_INVALID_IMAGE
    return STATE_FAILED
