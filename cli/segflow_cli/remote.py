"""`segflow invoke --remote`: send an event file to the deployed function and print what it returned.

FC 3.0 (what s.yaml's `component: fc3` deploys: functions without services) is the default and goes
through `segflow_cli.fcapi`. A function of an FC 2.0 service is reached with `--service`, through the FC
2.0 SDK `aliyun-fc2` (`/2016-08-15/services/{service}/functions/{name}/invocations`).

The endpoint is `https://<account_id>.<region>.fc.aliyuncs.com` (FC docs, Endpoints). The account id is
`--account-id`, else `ALIBABA_CLOUD_ACCOUNT_ID`, else asked from STS `GetCallerIdentity` with the same
AccessKey. `--endpoint` / `SEGFLOW_FC_ENDPOINT` replace the endpoint (a template: `{account_id}` and
`{region}` are filled in, e.g. `https://{account_id}.{region}-internal.fc.aliyuncs.com` from inside
Alibaba Cloud); `SEGFLOW_STS_ENDPOINT` replaces `https://sts.aliyuncs.com`.

Exit codes: 0 the function ran (or the asynchronous invocation was accepted), 1 the function failed or an
API refused the call, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from segflow.errors import ConfigError

if TYPE_CHECKING:
    from segflow.signing import Credentials

PROG = "segflow invoke --remote"
ENV_ACCOUNT_ID = "ALIBABA_CLOUD_ACCOUNT_ID"
ENV_FC_ENDPOINT = "SEGFLOW_FC_ENDPOINT"
ENV_STS_ENDPOINT = "SEGFLOW_STS_ENDPOINT"


def run_remote(args: argparse.Namespace, function_name: str, event: bytes, environ: Mapping[str, str]) -> int:
    """Invoke `function_name` with `event`; raises `ConfigError` for the usage errors (exit 2)."""
    from segflow.credentials import credentials_from_context
    from segflow.logs import install_redaction
    from segflow.settings import Settings
    from segflow_cli.fcapi import CloudApiError

    if args.log and args.asynchronous:
        raise ConfigError("--log needs a synchronous invocation: FC returns no log for --async")
    settings = Settings.from_env(environ)
    credentials = credentials_from_context(None, settings.credential_env)
    install_redaction([v for v in (credentials.access_key_secret, credentials.security_token) if v])
    region = args.region or settings.region
    try:
        endpoint = resolve_endpoint(args, environ, credentials, region)
    except CloudApiError as exc:
        print(
            f"{PROG}: cannot find the account id with STS GetCallerIdentity: {exc}; "
            f"pass --account-id or set {ENV_ACCOUNT_ID}",
            file=sys.stderr,
        )
        return 1
    if args.service:
        return _invoke_fc2(args, function_name, event, credentials, endpoint)
    return _invoke_fc3(args, function_name, event, credentials, endpoint)


def resolve_endpoint(
    args: argparse.Namespace, environ: Mapping[str, str], credentials: Credentials, region: str
) -> str:
    """The FC endpoint URL; the account id is looked up only when the endpoint template needs it."""
    from segflow_cli.fcapi import FC_ENDPOINT_TEMPLATE, fc_endpoint

    template = args.endpoint or environ.get(ENV_FC_ENDPOINT, "").strip() or FC_ENDPOINT_TEMPLATE
    account_id = None
    if "{account_id}" in template:
        account_id = resolve_account_id(args, environ, credentials)
    return fc_endpoint(template, region=region, account_id=account_id)


def resolve_account_id(args: argparse.Namespace, environ: Mapping[str, str], credentials: Credentials) -> str:
    """`--account-id`, else `ALIBABA_CLOUD_ACCOUNT_ID`, else STS GetCallerIdentity (raises CloudApiError)."""
    from segflow_cli.fcapi import DEFAULT_STS_ENDPOINT, caller_account_id

    given = (args.account_id or environ.get(ENV_ACCOUNT_ID, "")).strip()
    if given:
        return given
    sts_endpoint = environ.get(ENV_STS_ENDPOINT, "").strip() or DEFAULT_STS_ENDPOINT
    return caller_account_id(credentials, endpoint=sts_endpoint)


def _invoke_fc3(
    args: argparse.Namespace, function_name: str, event: bytes, credentials: Credentials, endpoint: str
) -> int:
    from segflow_cli.fcapi import CloudApiError, FcClient

    with FcClient(credentials, endpoint) as client:
        try:
            result = client.invoke(
                function_name,
                event,
                qualifier=args.qualifier,
                asynchronous=args.asynchronous,
                log_tail=args.log,
            )
        except CloudApiError as exc:
            print(f"{PROG}: {function_name} was not invoked: {exc}", file=sys.stderr)
            return 1
    return _report(
        function_name,
        args.asynchronous,
        body=result.body,
        request_id=result.request_id,
        log_tail=result.log_tail,
        error_type=result.error_type,
    )


def _report(
    function_name: str,
    asynchronous: bool,
    *,
    body: bytes,
    request_id: str | None,
    log_tail: str | None,
    error_type: str | None = None,
) -> int:
    from segflow_cli.output import print_body, print_json

    if log_tail:
        print(log_tail, file=sys.stderr)
    if asynchronous:
        print_json({"invocation": "Async", "requestId": request_id})
        return 0
    print_body(body)
    if error_type:
        print(
            f"{PROG}: {function_name} failed: {error_type}{_function_error(body)} [RequestId {request_id}]",
            file=sys.stderr,
        )
        return 1
    return 0


def _function_error(body: bytes) -> str:
    """` <errorType>: <errorMessage>` from the error JSON FC sends for a failed function, if it is one."""
    import json

    try:
        document = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(document, dict) or not document.get("errorMessage"):
        return ""
    return f" {document.get('errorType') or 'Error'}: {document['errorMessage']}"


def _invoke_fc2(
    args: argparse.Namespace, function_name: str, event: bytes, credentials: Credentials, endpoint: str
) -> int:
    import fc2  # aliyun-fc2: a test/deploy dependency, only for functions of FC 2.0 services

    from segflow_cli.fcapi import decode_log_tail

    client = fc2.Client(
        endpoint=endpoint,
        accessKeyID=credentials.access_key_id,
        accessKeySecret=credentials.access_key_secret,
        securityToken=credentials.security_token or "",
    )
    headers = {"x-fc-invocation-type": "Async" if args.asynchronous else "Sync"}
    if args.log:
        headers["x-fc-log-type"] = "Tail"
    try:
        response = client.invoke_function(
            args.service, function_name, payload=event, headers=headers, qualifier=args.qualifier
        )
    except fc2.fc_exceptions.FcError as exc:
        print(f"{PROG}: {function_name} failed: {_describe_fc2_error(exc)}", file=sys.stderr)
        return 1
    answer = response.headers or {}
    body = response.data
    # fc2 raises FcError for an answer with x-fc-error-type, so a response here is a success.
    return _report(
        function_name,
        args.asynchronous,
        body=body if isinstance(body, bytes) else str(body).encode(),
        request_id=answer.get("x-fc-request-id"),
        log_tail=decode_log_tail(answer.get("x-fc-log-result")),
    )


def _describe_fc2_error(exc: Any) -> str:
    """HTTP status, code, message and RequestId of an fc2 `FcError` (its message is the error JSON)."""
    import json

    try:
        document = json.loads(exc.message)
    except (TypeError, ValueError):
        document = {}
    if not isinstance(document, dict):
        document = {}
    code = exc.err_code or next(
        (str(document[k]) for k in ("ErrorCode", "errorCode", "errorType") if document.get(k)), ""
    )
    message = next(
        (str(document[k]) for k in ("ErrorMessage", "errorMessage") if document.get(k)), str(exc.message)
    )
    return f"HTTP {exc.status_code} {code}: {message} [RequestId {exc.request_id}]"
