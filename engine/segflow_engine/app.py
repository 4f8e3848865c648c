"""The engine as a WSGI application: imageseg (2019-12-30), videoseg (2020-03-20) and PicWish on one port.

Routes:
- `GET|POST /` (any path but the ones below) — RPC calls, parameters in the query or a urlencoded form
  body, routed by `Action` + `Version` (v3 clients may name them in `x-acs-action` / `x-acs-version`),
  signed with v1 or v3 (`segflow_engine.verify.verify_request`).
- `POST /tasks/visual/segmentation` and `GET /tasks/visual/segmentation/<task_id>` — PicWish, AppCode auth.
- `GET|HEAD /results/<id>/<name>?Expires=…&Signature=…` — the result files the answers link to.
- `AuthorizeFileUpload` (RPC, version 2019-12-19), `POST /viapi-customer-temp/` (the form upload it
  grants) and `GET /viapi-customer-temp/<key>` — the temporary bucket (`segflow_engine.tempstore`).

`Engine.handle` answers one `Request` (no sockets, no WSGI); calling the `Engine` is the WSGI entry
(`segflow_engine.handler.serve_wsgi`), which any WSGI server can serve (`segflow_engine.server` puts it on
waitress). Model work runs on a `WorkerPool` of `workers` threads, so the server's threads stay free to
answer polls and downloads while models run.

Results, jobs, PicWish tasks and the temporary bucket live where `backends` says
(`segflow_engine.backends`): by default on this machine, served by the engine itself (the result and
temporary-bucket routes above); on Function Compute in OSS, where those routes do not exist and the answers
link to presigned OSS URLs instead.
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from segflow.catalogue import Action, get_action, is_async_call
from segflow.errors import ApiError, InputValidationError, SegflowError
from segflow_engine import picwish, served
from segflow_engine.auth import Authenticator, EngineCredentials, GatewayTrust
from segflow_engine.backends import Backends, Job, LocalJobs, LocalTasks
from segflow_engine.config import EngineConfig
from segflow_engine.fetch import check_url
from segflow_engine.handler import Answer, FileAnswer, Request, StartResponse, oss_error, serve_wsgi
from segflow_engine.jobs import JobState, WorkerPool
from segflow_engine.pipeline import ActionsModule, Pipeline
from segflow_engine.protocol import (
    HttpAnswer,
    RpcFailure,
    new_request_id,
    render_error,
    render_json,
    render_success,
    wants_xml,
)
from segflow_engine.quota import CallQuota
from segflow_engine.resultstore import ResultAccessError, ResultStore
from segflow_engine.rpc import (
    ASYNC_RESULT_ACTION,
    INTERNAL_ERROR,
    PRODUCT_BY_VERSION,
    form_fields,
    job_error_code,
    require_media_url,
    route,
)
from segflow_engine.tempstore import TEMP_BUCKET, TempBucket
from segflow_engine.verify import SignatureMismatchError

LOG = logging.getLogger("segflow_engine.server")

RESULTS_PREFIX = "/results/"
PICWISH_TASK_SECONDS = 30.0  # beyond this a PicWish task ends with state -8
SIGNATURE_MISMATCH_MESSAGE = (
    "Specified signature is not matched with our calculation. server string to sign is:"
)


@dataclass
class Engine:
    """Routes one request to its answer."""

    credentials: EngineCredentials
    actions: ActionsModule
    state_dir: Path
    base_url: str
    config: EngineConfig = field(default_factory=EngineConfig)
    backends: Backends | None = None  # None: this machine's state folder, served by the engine itself

    def __post_init__(self) -> None:
        self.auth = GatewayTrust() if self.config.trust_gateway else Authenticator(self.credentials)
        work_dir = self.state_dir / "work"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.pool = WorkerPool(self.config.workers)
        self.store: ResultStore | None = None
        self.temp_bucket: TempBucket | None = None
        self.backends = self.backends or self._local_backends()
        self.pipeline = Pipeline(
            self.actions,
            self.backends.results,
            self.pool,
            work_dir,
            image_policy=self.config.fetch_policy(self.config.image_policy),
            video_policy=self.config.fetch_policy(self.config.video_policy),
            inputs=self.backends.inputs,
        )
        self.quota = CallQuota(self.config.qps) if self.config.qps else None

    def _local_backends(self) -> Backends:
        store = ResultStore(self.state_dir / "results", base_url=self.base_url)
        self.store = store
        self.temp_bucket = TempBucket(self.state_dir / "temp", urlsplit(self.base_url).netloc)
        self.local_tasks = LocalTasks(self.config.picwish_result_ttl_seconds, clock=lambda: store.clock())
        jobs = LocalJobs(self.pool, self.run_job, job_error_code)
        return Backends(store, jobs, self.local_tasks, self.temp_bucket)

    # -- entry ---------------------------------------------------------------------------------------
    def streams(self, method: str, path: str) -> bool:
        """The one rule for which requests stream their body instead of having it read into memory first:
        the temporary bucket's form uploads (up to 1 GiB, written to disk as they arrive)."""
        return self.temp_bucket is not None and TempBucket.is_upload(method, path)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The engine as a WSGI application (waitress serves it; a test may call it with an environ)."""
        return serve_wsgi(self, environ, start_response, self.config.limits.max_call_body_bytes)

    def handle(self, request: Request) -> Answer:
        try:
            if self.streams(request.method, request.path):
                return self._receive_upload(request)
            if request.path.startswith(RESULTS_PREFIX) and self.store is not None:
                return self._handle_result(request)
            if self.temp_bucket is not None and self.temp_bucket.is_object_path(request.path):
                return self._handle_temp_object(request)
            if request.path == picwish.PATH or request.path.startswith(picwish.PATH + "/"):
                return self._handle_picwish(request)
            return self._handle_rpc(request)
        except Exception:
            LOG.exception("unexpected failure on %s %s", request.method, request.path)
            return render_json(500, {"Code": "InternalError", "Message": "the engine failed"})

    def cleanup(self) -> None:
        """Forget what expired on this machine (only a local engine keeps anything; OSS keeps the rest)."""
        self.pool.cleanup()
        if self.store is not None and self.temp_bucket is not None:
            self.store.cleanup()
            self.temp_bucket.cleanup()
            self.local_tasks.cleanup()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    # -- RPC -----------------------------------------------------------------------------------------
    def _handle_rpc(self, request: Request) -> HttpAnswer:
        request_id = new_request_id()
        unverified = {**request.query, **form_fields(request.header("content-type"), request.body)}
        xml = wants_xml(unverified)
        version = unverified.get("Version") or request.header("x-acs-version")
        product = PRODUCT_BY_VERSION.get(version, "imageseg")
        host_id = request.header("host") or urlsplit(self.base_url).netloc
        if request.method not in ("GET", "POST"):
            failure = RpcFailure("UnsupportedHTTPMethod", f"{request.method} is not supported", 405)
            return render_error(failure, request_id, host_id, xml=xml)
        try:
            verified = self.auth.verify_rpc(
                request.method, request.path, request.query, request.headers, request.body
            )
            params = verified.params
            xml = wants_xml(params)
            quota_key = f"{verified.access_key_id}/{params.get('Action', '')}"
            if self.quota is not None and not self.quota.allow(quota_key):
                raise ApiError(
                    "Request was denied due to user flow control.", code="Throttling.User", http_status=400
                )
            if TempBucket.is_authorize_call(params):  # answered at the top level, not in Data
                return render_json(200, {"RequestId": request_id, **self.backends.uploads.authorize(params)})
            action, data = self._dispatch(params, request_id)
            return render_success(action, request_id, data, xml=xml)
        except concurrent.futures.TimeoutError:
            message = f"the model did not finish within {self.config.sync_timeout_seconds:g} s"
            return render_error(RpcFailure("Timeout", message, 408), request_id, host_id, xml=xml)
        except SignatureMismatchError as exc:
            # The service tells the caller its string-to-sign after this exact prefix, and
            # aliyun-python-sdk-core parses it (split on ':') to tell a wrong secret from a bad signer.
            # It holds no secret (an STS token is redacted by the layer).
            message = f"{SIGNATURE_MISMATCH_MESSAGE}{exc.server_string_to_sign}"
            failure = RpcFailure("SignatureDoesNotMatch", message, exc.http_status or 400)
            return render_error(failure, request_id, host_id, xml=xml)
        except SegflowError as exc:
            failure = RpcFailure.from_error(exc)
            return render_error(failure, request_id, host_id, xml=xml)
        except Exception as exc:
            LOG.exception("RPC %s failed", request_id)
            failure = RpcFailure(INTERNAL_ERROR[product], f"{type(exc).__name__}: {exc}", 500)
            return render_error(failure, request_id, host_id, xml=xml)

    def _dispatch(self, params: Mapping[str, str], request_id: str) -> tuple[str, dict[str, Any]]:
        action = route(params)
        if action.name == ASYNC_RESULT_ACTION:
            return action.name, self._job_result(params)
        url = require_media_url(action, params)
        for name in action.required_params:
            if not params.get(name):
                raise InputValidationError(f"{name} is mandatory for {action.name}", code="MissingParameter")
        check_url(action, url)
        if not is_async_call(action, params):
            stored = self.pipeline.run_image(
                action,
                params,
                ttl_seconds=self.config.result_ttl_seconds,
                timeout=self.config.sync_timeout_seconds,
            )
            return action.name, stored.data
        self.backends.jobs.submit(request_id, Job(action.name, dict(params)))
        return action.name, {}

    def run_job(self, job: Job) -> Mapping[str, Any]:
        """One asynchronous job, start to end, on the calling model worker: its `Result` mapping."""
        action = get_action(job.action)
        if action.media == "video":
            return self.pipeline.run_video(action, job.params)
        stored = self.pipeline.run_image(
            action, job.params, ttl_seconds=self.config.result_ttl_seconds, on_worker=True
        )
        return {"ImageURL": stored.image_url}

    def job_state(self, job_id: str) -> JobState | None:
        return self.backends.jobs.state(job_id)

    def _job_result(self, params: Mapping[str, str]) -> dict[str, Any]:
        job_id = params.get("JobId", "").strip()
        if not job_id:
            raise InputValidationError("JobId is mandatory for GetAsyncJobResult", code="MissingParameter")
        state = self.job_state(job_id)
        if state is None:
            raise InputValidationError(f"no job {job_id!r} (or it expired)", code="InvalidParameter")
        return state.to_data()

    # -- PicWish -------------------------------------------------------------------------------------
    def _handle_picwish(self, request: Request) -> HttpAnswer:
        if not self.auth.appcode_accepted(request.header("authorization")):
            return render_json(401, picwish.error_envelope(401, "Invalid AppCode"))
        if self.quota is not None and not self.quota.allow(f"picwish/{request.header('authorization')}"):
            return render_json(429, picwish.error_envelope(429, "Too Many Requests"))
        if request.method == "GET" and request.path.startswith(picwish.PATH + "/"):
            found = self.backends.tasks.recall(request.path[len(picwish.PATH) + 1 :])
            if found is None:
                return render_json(404, picwish.error_envelope(404, "task not found"))
            return render_json(200, picwish.envelope(found))
        if request.method != "POST" or request.path != picwish.PATH:
            return render_json(404, picwish.error_envelope(404, "not found"))
        if "PicWish" not in served.served_actions():
            return picwish.not_served(served.in_order(served.served_actions()))
        try:
            task = picwish.parse_request(request.header("content-type"), request.body, request.query)
        except picwish.PicWishBadRequest as exc:
            return render_json(exc.status, picwish.error_envelope(exc.status, exc.message))
        action = get_action("PicWish")
        try:
            check_url(action, task.image_url)
        except SegflowError as exc:
            return render_json(400, picwish.error_envelope(400, exc.message))
        data = self._run_picwish(action, task)
        self.backends.tasks.remember(data["task_id"], data)
        return render_json(200, picwish.envelope(data))

    def _run_picwish(self, action: Action, task: picwish.PicWishRequest) -> dict[str, Any]:
        task_id = picwish.new_task_id()
        created = picwish.now_ms()

        def finish(
            state: int, detail: str | None = None, image: str | None = None, mask: str | None = None
        ) -> dict[str, Any]:
            return picwish.task_data(
                task, task_id, state=state, created_at=created, image=image, mask=mask, detail=detail
            )

        # PicWish ends a task that takes over 30 s (-8); an engine that may do no work after its answer
        # (sync_timeout_seconds None, on Function Compute) waits for its model instead.
        timeout = None if self.config.sync_timeout_seconds is None else PICWISH_TASK_SECONDS
        try:
            stored = self.pipeline.run_image(
                action,
                task.action_params(),
                ttl_seconds=self.config.picwish_result_ttl_seconds,
                policy=self.config.fetch_policy(self.config.picwish_policy),
                timeout=timeout,
            )
        except concurrent.futures.TimeoutError:
            return finish(picwish.STATE_TIMEOUT, f"not done within {PICWISH_TASK_SECONDS:g} s")
        except SegflowError as exc:
            return finish(picwish.state_for_code(exc.code), exc.message)
        except Exception as exc:
            LOG.exception("PicWish task %s failed", task_id)
            return finish(picwish.STATE_FAILED, f"{type(exc).__name__}: {exc}")
        return finish(picwish.STATE_DONE, image=stored.image_url, mask=stored.mask_url)

    # -- results -------------------------------------------------------------------------------------
    def _handle_result(self, request: Request) -> Answer:
        if request.method not in ("GET", "HEAD"):
            return oss_error(405, "MethodNotAllowed", "results are read-only")
        parts = request.path[len(RESULTS_PREFIX) :].split("/")
        if len(parts) != 2:
            return oss_error(404, "NoSuchKey", "no such result")
        result_id, name = parts[0], unquote(parts[1])
        if self.store is None:
            return oss_error(404, "NoSuchKey", "no such result")
        try:
            path = self.store.resolve(
                result_id, name, request.query.get("Expires"), request.query.get("Signature")
            )
        except ResultAccessError as exc:
            code = "AccessDenied" if exc.status == 403 else "NoSuchKey"
            return oss_error(exc.status, code, exc.reason)
        return FileAnswer(path, self.store.content_type(name))

    # -- the temporary bucket ------------------------------------------------------------------------
    def _receive_upload(self, request: Request) -> HttpAnswer:
        """A PostObject: its body is the server's spooled input (`Request.stream`), or one held in memory."""
        if self.temp_bucket is None:
            return oss_error(404, "NoSuchBucket", "no temporary bucket here")
        body = request.stream if request.stream is not None else io.BytesIO(request.body)
        length = int(request.header("content-length") or len(request.body))
        answer, _ = self.temp_bucket.receive(request.headers, body, length)  # waitress read it whole
        return answer

    def _handle_temp_object(self, request: Request) -> Answer:
        if request.method not in ("GET", "HEAD"):
            return oss_error(405, "MethodNotAllowed", "temporary objects are read-only here", TEMP_BUCKET)
        path = self.temp_bucket.object_path(request.path) if self.temp_bucket is not None else None
        if path is None:
            return oss_error(404, "NoSuchKey", "The specified key does not exist.", TEMP_BUCKET)
        return FileAnswer(path, "application/octet-stream")
