"""A paid answer kept in its record: what a synchronous call returned, until it is stored.

The record keeps the answer's ids and result URLs (`Payload.answer`) until the result is stored, so a
delivery that finds it stores it instead of calling again, while its URLs live.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segflow.catalogue import Action, is_async_call
from segflow.records import JobRecord
from segflow.results import Element, SegmentResult

RESULT_URL_SECONDS = 1800.0  # imageseg result URLs live 30 minutes (PicWish's an hour)
RESUME_MARGIN_SECONDS = 300.0  # a kept answer is only worth storing with time left to download it
_ELEMENT_FIELDS = ("image_url", "x", "y", "width", "height", "name", "origin_image_url")
_ANSWER_FIELDS = ("action", "request_id", "image_url", "origin_image_url", "job_id", "mask_url", "video_url")


def holds_answer(job: JobRecord, action: Action, now: float) -> bool:
    """An earlier delivery paid for the call but could not store its answer: store that one instead."""
    payload = job.payload
    if payload.outputs or (is_async_call(action, job.params) and payload.job_id):
        return True  # a stored result only needs its record marked done; a JobId can be collected any time
    expires_at = payload.answer_expires_at
    return payload.answer is not None and expires_at is not None and now < expires_at - RESUME_MARGIN_SECONDS


def with_answer(job: JobRecord, action: Action, result: SegmentResult, now: float) -> JobRecord:
    """The record with what the call returned (the JobId, or the answer's result URLs)."""
    if is_async_call(action, job.params) and result.job_id:
        return job.with_payload(job_id=result.job_id, request_id=result.request_id, submitted_at=now)
    return job.with_payload(
        request_id=result.request_id,
        submitted_at=now,
        answer=_answer_record(result),
        answer_expires_at=now + RESULT_URL_SECONDS,
    )


def _answer_record(result: SegmentResult) -> dict[str, Any]:
    """What a synchronous answer must keep to be stored later: its ids and result URLs."""
    kept: dict[str, Any] = {name: getattr(result, name) for name in _ANSWER_FIELDS}
    kept["elements"] = [{name: getattr(e, name) for name in _ELEMENT_FIELDS} for e in result.elements]
    return kept


def kept_answer(kept: Mapping[str, Any]) -> SegmentResult:
    """The answer a record keeps, as the call returned it."""
    elements = tuple(
        Element(**{name: item.get(name) for name in _ELEMENT_FIELDS}) for item in kept.get("elements") or ()
    )
    return SegmentResult(
        action=str(kept.get("action") or ""),
        request_id=str(kept.get("request_id") or ""),
        image_url=kept.get("image_url"),
        origin_image_url=kept.get("origin_image_url"),
        elements=elements,
        job_id=kept.get("job_id"),
        mask_url=kept.get("mask_url"),
        video_url=kept.get("video_url"),
    )
