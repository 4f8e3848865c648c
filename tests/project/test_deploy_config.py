"""ram-policy.json grants least privilege in the platform's own action names; s.yaml's text holds no secret.

What Serverless Devs makes of s.yaml (variables, environment, schema) is checked on the real CLI's rendering
in tests/project/test_deploy_s_yaml_renders.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from segflow.catalogue import ACTIONS, MEDIA_ACTIONS, Action, is_async_call
from segflow.settings import Settings
from tests.conftest import REPO_ROOT

yaml = pytest.importorskip("yaml")


def load_s_yaml() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "s.yaml").read_text(encoding="utf-8"))
    return document


def test_s_yaml_is_edition_3_with_two_fc3_functions_and_the_engine() -> None:
    document = load_s_yaml()
    assert document["edition"] == "3.0.0"
    assert {name: r["component"] for name, r in document["resources"].items()} == {
        "on-upload": "fc3",
        "collect-jobs": "fc3",
        "engine": "fc3",
    }


def test_no_secret_like_value_anywhere_in_s_yaml() -> None:
    text = (REPO_ROOT / "s.yaml").read_text(encoding="utf-8")
    assert not re.search(r"LTAI[0-9A-Za-z]{12,}|CAIS[0-9A-Za-z+/=]{16,}|accessKeySecret", text)


def test_s_yaml_takes_the_appcode_only_from_the_deployers_environment() -> None:
    """The one secret a function may hold: s.yaml names the variable, the value never lives in the file."""
    for name, resource in load_s_yaml()["resources"].items():
        environment = resource["props"]["environmentVariables"]
        secrets = {n for n in environment if any(w in n for w in ("SECRET", "TOKEN", "APPCODE", "PASSWORD"))}
        if name == "engine":  # trusts its trigger's signature check: no key of its own
            assert not secrets and "SEGFLOW_ENGINE_ACCESS_KEYS" not in environment
            continue
        assert secrets == {"SEGFLOW_PICWISH_APPCODE"}
        assert environment["SEGFLOW_PICWISH_APPCODE"] == "${env('SEGFLOW_PICWISH_APPCODE', '')}"


# -- RAM policy ----------------------------------------------------------------------------------------
def load_policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads((REPO_ROOT / "ram-policy.json").read_text(encoding="utf-8"))
    return policy


def grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
        for resource in statement["Resource"]
    }


def routable_actions() -> list[Action]:
    """Every action a routing rule can send an upload to, RAM-authorised ones only.

    The upload service refuses a rule whose action does not take the object's media, so exactly the image
    and video actions are reachable (never GetAsyncJobResult itself). PicWish is a Marketplace API
    authorised by its AppCode, not by RAM.
    """
    actions = [ACTIONS[name] for name in MEDIA_ACTIONS if ACTIONS[name].product != "picwish"]
    assert "GetAsyncJobResult" not in {a.name for a in actions}
    return actions


def can_answer_with_a_job(action: Action) -> bool:
    """Always-async actions, and those made async by a parameter (SegmentBody with Async=true)."""
    return is_async_call(action, {"Async": "true"})


def expected_vision_actions() -> set[str]:
    """The RAM actions the function role needs, in the platform's documented form.

    Visual Intelligence API docs, "Control access permissions using a RAM policy" (and its "Custom policy
    reference"): a single API is granted as `viapi-<Product>:<Action>` (their example:
    `viapi-ocr:RecognizeBankCard`); the full-access form is `viapi-imageseg:*`, `viapi-videoseg:*`, ... plus
    `viapi:*`. A bare `imageseg:<Action>` matches nothing, so every call would be denied.

    Beside the routable actions: `GetAsyncJobResult` of every product with an action that can answer with
    a job (the collector polls it there), and `AuthorizeFileUpload` of every product (how the official
    SDK's `*_advance` methods hand a file to the API: openplatform's AuthorizeFileUpload with
    `Product=<product>`). Which action name RAM checks for AuthorizeFileUpload is not documented; the
    system policy AliyunVIAPIFullAccess covers it with both `viapi-<product>:*` and `viapi:*`, so the
    product-scoped name is granted here and `viapi:*` below (test_policy_grants_the_upload_authorisation).
    """
    actions = routable_actions()
    names = {f"viapi-{a.product}:{a.name}" for a in actions}
    names |= {f"viapi-{a.product}:GetAsyncJobResult" for a in actions if can_answer_with_a_job(a)}
    names |= {f"viapi-{a.product}:AuthorizeFileUpload" for a in actions}
    return names


def test_policy_reads_inputs_and_writes_only_own_prefixes() -> None:
    settings = Settings()
    bucket = "acs:oss:*:*:segflow-demo"
    oss = {(a, r) for a, r in grants(load_policy()) if a.startswith("oss:")}
    expected = {("oss:GetObject", f"{bucket}/{settings.input_prefix}*")}
    for prefix in settings.own_prefixes:
        for action in ("oss:GetObject", "oss:PutObject", "oss:DeleteObject", "oss:AbortMultipartUpload"):
            expected.add((action, f"{bucket}/{prefix}*"))
    expected.add(("oss:ListObjects", bucket))
    assert oss == expected


def test_policy_lists_only_own_prefixes() -> None:
    (listing,) = [s for s in load_policy()["Statement"] if "oss:ListObjects" in s["Action"]]
    assert listing["Condition"] == {"StringLike": {"oss:Prefix": [f"{p}*" for p in Settings().own_prefixes]}}


def test_policy_grants_every_vision_action_a_rule_can_reach_and_no_other() -> None:
    vision = {a for a, _ in grants(load_policy()) if a.startswith("viapi-")}
    expected = expected_vision_actions()
    assert vision == expected, f"missing {expected - vision}, extra {vision - expected}"
    # The derivation is not vacuous: the defaults and both pollers are in it.
    assert {
        "viapi-imageseg:SegmentCommonImage",
        "viapi-imageseg:GetAsyncJobResult",  # SegmentBody with Async=true
        "viapi-videoseg:SegmentVideoBody",
        "viapi-videoseg:GetAsyncJobResult",
    } <= vision


def test_policy_uses_no_bare_product_prefix() -> None:
    """`imageseg:`/`videoseg:` are not the platform's names: such a grant silently allows nothing."""
    products = {a.product for a in ACTIONS.values()}
    assert not any(action.split(":")[0] in products for action, _ in grants(load_policy()))


def test_policy_grants_the_upload_authorisation_as_the_platform_documents_it() -> None:
    """`viapi:*`, in a statement of its own, is the only wildcard.

    The platform's RAM pages document no narrower action for openplatform's AuthorizeFileUpload (2019-12-19);
    the system policy AliyunVIAPIFullAccess pairs the product wildcards with `viapi:*`, and
    AliyunVIAPIReadOnlyAccess shows that namespace holds the platform's own Get/List/Query actions, not the
    vision APIs. So `viapi:*` grants no vision call beyond the list above.
    """
    policy = load_policy()
    wildcards = {(a, r) for a, r in grants(policy) if a.endswith("*") or a == "*"}
    assert wildcards == {("viapi:*", "*")}
    (statement,) = [s for s in policy["Statement"] if "viapi:*" in s["Action"]]
    assert statement["Action"] == ["viapi:*"] and "Condition" not in statement


# -- the engine's role (ram-policy-engine.json) and calling it ------------------------------------------
ENGINE_FUNCTION_ARN = "acs:fc:*:*:functions/segflow-engine"


def load_engine_policy() -> dict[str, Any]:
    policy: dict[str, Any] = json.loads((REPO_ROOT / "ram-policy-engine.json").read_text(encoding="utf-8"))
    return policy


def engine_props() -> dict[str, Any]:
    props: dict[str, Any] = load_s_yaml()["resources"]["engine"]["props"]
    return props


def test_the_engine_role_writes_only_under_its_own_prefix() -> None:
    prefix = engine_props()["environmentVariables"]["SEGFLOW_ENGINE_PREFIX"]
    bucket = "acs:oss:*:*:segflow-demo"
    oss = {(a, r) for a, r in grants(load_engine_policy()) if a.startswith("oss:")}
    expected = {
        (action, f"{bucket}/{prefix}*")
        for action in ("oss:GetObject", "oss:PutObject", "oss:DeleteObject", "oss:AbortMultipartUpload")
    }
    assert oss == expected | {("oss:ListObjects", bucket)}
    (listing,) = [s for s in load_engine_policy()["Statement"] if "oss:ListObjects" in s["Action"]]
    assert listing["Condition"] == {"StringLike": {"oss:Prefix": [f"{prefix}*"]}}


def test_the_engines_prefix_is_apart_from_the_inputs_and_the_functions_prefixes() -> None:
    # The OSS trigger must never see the engine's writes, and neither role may touch the other's objects.
    prefix = engine_props()["environmentVariables"]["SEGFLOW_ENGINE_PREFIX"]
    settings = Settings()
    for other in (settings.input_prefix, *settings.own_prefixes):
        assert not prefix.startswith(other) and not other.startswith(prefix)


def test_the_engine_may_invoke_itself_and_nothing_else_of_fc() -> None:
    """Video jobs are queued as asynchronous invocations of the engine itself (InvokeFunction). Whether a
    function ARN narrows `fc:InvokeFunction` is unconfirmed (fc-engine.md §5: the API page lists "All
    Resources"); the README says what to grant if FC refuses it."""
    fc = {(a, r) for a, r in grants(load_engine_policy()) if a.startswith("fc:")}
    assert fc == {("fc:InvokeFunction", ENGINE_FUNCTION_ARN)}
    assert ENGINE_FUNCTION_ARN.endswith(f"/{engine_props()['functionName']}")
    assert not [a for a, _ in grants(load_engine_policy()) if a.endswith("*")]


def test_the_functions_may_call_the_engine_and_no_other_function() -> None:
    fc = {(a, r) for a, r in grants(load_policy()) if a.startswith("fc:")}
    assert fc == {("fc:InvokeFunction", ENGINE_FUNCTION_ARN)}


def test_the_engines_jobs_and_runtime_agree_with_its_function_settings() -> None:
    """A job shows PROCESSING until the function's `timeout` has passed since its last attempt began, and
    QUEUING until FC drops its event (`maxAsyncEventAgeInSeconds`); after that it reads TIMEOUT_FAILED
    (segflow_engine.cloudjobs). FC retries a failed delivery (`maxAsyncRetryAttempts`) and calls the
    Initializer, where the models load; the engine trusts the gateway, as the trigger checks signatures."""
    from segflow_engine import cloudjobs, fc

    props = engine_props()
    assert props["timeout"] < cloudjobs.JOB_SECONDS
    assert props["asyncInvokeConfig"]["maxAsyncEventAgeInSeconds"] == cloudjobs.EVENT_AGE_SECONDS
    assert props["asyncInvokeConfig"]["maxAsyncRetryAttempts"] >= 1
    assert props["instanceLifecycleConfig"]["initializer"]["timeout"] <= 300  # FC's Initializer limit
    assert fc.KEEP_ALIVE_SECONDS >= 15 * 60
    (trigger,) = props["triggers"]
    assert trigger["triggerConfig"]["authType"] == "function"
    assert props["environmentVariables"]["SEGFLOW_ENGINE_AUTH"] == "fc-gateway"
