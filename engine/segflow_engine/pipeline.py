"""One action call from input URL to answer: fetch, validate with the layer's catalogue, run the model on a
worker, store the outputs and shape `Data` (or the async `Result`) the way the service does.

The server decides *when* this runs (inline for synchronous calls, as a job for asynchronous ones); this
module decides *what* runs. The models are behind `ActionsModule` (`segflow_engine.actions` in production,
a stub in the protocol tests), so nothing here imports numpy or a model.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from segflow.catalogue import Action
from segflow.validation import validate_object
from segflow_engine.backends import InputUrls, Results
from segflow_engine.fetch import IMAGE_POLICY, VIDEO_POLICY, FetchPolicy, fetch_bytes, fetch_to_file
from segflow_engine.jobs import WorkerPool
from segflow_engine.resultstore import RESULT_TTL_SECONDS


class ActionsModule(Protocol):
    """What the server needs from the models (`segflow_engine.actions`)."""

    def run_image_action(
        self, action: str, params: Mapping[str, str], image: bytes, extra_images: Mapping[str, bytes]
    ) -> Any: ...

    def run_video_action(
        self, action: str, params: Mapping[str, str], src_path: Path, dst_path: Path
    ) -> Any: ...


def bytes_reader(data: bytes) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return read_at


def file_reader(path: Path) -> Callable[[int, int], bytes]:
    def read_at(offset: int, length: int) -> bytes:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    return read_at


@dataclass
class Pipeline:
    actions: ActionsModule
    store: Results
    pool: WorkerPool
    work_dir: Path
    image_policy: FetchPolicy = IMAGE_POLICY
    video_policy: FetchPolicy = VIDEO_POLICY
    inputs: InputUrls | None = None  # the engine's own private objects (its temporary bucket in OSS)

    def input_url(self, url: str) -> str:
        return url if self.inputs is None else self.inputs.resolve(url)

    # -- images ----------------------------------------------------------------------------------
    def fetch_image(self, action: Action, url: str, policy: FetchPolicy | None = None) -> bytes:
        data = fetch_bytes(action, self.input_url(url), policy or self.image_policy)
        validate_object(action, bytes_reader(data), len(data))
        return data

    def run_image(
        self,
        action: Action,
        params: Mapping[str, str],
        *,
        ttl_seconds: int = RESULT_TTL_SECONDS,
        policy: FetchPolicy | None = None,
        on_worker: bool = False,
        timeout: float | None = None,
    ) -> StoredOutput:
        """Fetch and validate every input of the call, run the model on a worker, store what it made.

        `on_worker` says the caller already is a worker (an async job): the model then runs right here, as
        waiting on the pool from inside it could deadlock a one-worker pool.
        """
        image = self.fetch_image(action, params[action.url_param], policy)
        extra: dict[str, bytes] = {}
        for name in action.required_params + action.optional_params:
            if name.endswith("URL") and params.get(name):
                extra[name] = self.fetch_image(action, params[name], policy)

        def work() -> Any:
            return self.actions.run_image_action(action.name, params, image, extra)

        output = work() if on_worker else self.pool.run(work, timeout=timeout)
        return store_output(self.store, action, output, ttl_seconds=ttl_seconds)

    # -- videos ----------------------------------------------------------------------------------
    def run_video(self, action: Action, params: Mapping[str, str]) -> dict[str, Any]:
        """The whole video job (runs on a worker already): the async `Result` mapping."""
        with tempfile.TemporaryDirectory(prefix="segflow-engine-", dir=self.work_dir) as tmp:
            src = Path(tmp) / "input"
            size = fetch_to_file(action, self.input_url(params[action.url_param]), src, self.video_policy)
            validate_object(action, file_reader(src), size)
            dst = Path(tmp) / "result.mp4"  # a video that breaks off goes with the folder, never stored
            self.actions.run_video_action(action.name, params, src, dst)
            stored = self.store.put_file("result.mp4", dst, ttl_seconds=RESULT_TTL_SECONDS)
        key = action.result_url_key or action.url_param
        return {key: stored.url}


@dataclass(frozen=True)
class StoredOutput:
    """An image action's outputs, stored: `data` is the answer's `Data`; PicWish also needs the URLs."""

    data: dict[str, Any]
    image_url: str | None
    mask_url: str | None


def store_output(store: Results, action: Action, output: Any, *, ttl_seconds: int) -> StoredOutput:
    """Stores the files of an `ActionOutput` under one result id and shapes `Data` like the service:

    - single-result actions: `{"ImageURL": …}` (SegmentBody, SegmentCommodity, SegmentCommonImage);
    - element actions: `{"Elements": [{"ImageURL", "X", "Y", "Width", "Height"} …]}` (head, face, hair),
      `{"ImageUrl"}` (SegmentFurniture, sic), `{"OriginImageURL", "ImageURL"}` (SegmentVehicle),
      `{"ImageURL"}` (RefineMask), and ParseFace's `OriginImageURL` + `Elements[{"Name", "ImageURL"}]`.
    """
    result_id = store.new_result_id()
    extension = getattr(output, "extension", "png") or "png"

    def put(name: str, data: bytes | None, suffix: str = "png") -> str | None:
        if data is None:
            return None
        return store.put_bytes(f"{name}.{suffix}", data, ttl_seconds=ttl_seconds, result_id=result_id).url

    # Only the main image follows `extension` (PicWish format=jpg); masks and crops are always PNG.
    image_url = put("image", getattr(output, "image", None), extension)
    mask_url = put("mask", getattr(output, "mask", None))
    origin_url = put("origin", getattr(output, "origin_image", None))
    data: dict[str, Any] = {}
    if not action.elements:
        data[action.result_url_key or "ImageURL"] = image_url
        return StoredOutput(data, image_url, mask_url)
    key = action.result_url_key or "ImageURL"
    elements: list[dict[str, Any]] = []
    for index, element in enumerate(getattr(output, "elements", ()) or ()):
        entry: dict[str, Any] = {}
        name = getattr(element, "name", None)
        if name:
            entry["Name"] = name
        element_origin = getattr(element, "origin_image", None)
        if element_origin is not None:
            entry["OriginImageURL"] = put(f"element-{index}-origin", element_origin)
        entry[key] = put(f"element-{index}", element.image)
        box = getattr(element, "box", None)
        if box is not None:
            entry["X"], entry["Y"], entry["Width"], entry["Height"] = (int(v) for v in box)
        elements.append(entry)
    if origin_url is not None:
        data["OriginImageURL"] = origin_url
    data["Elements"] = elements
    return StoredOutput(data, image_url, mask_url)
