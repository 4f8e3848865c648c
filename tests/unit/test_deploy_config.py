"""s.yaml and ram-policy.json: valid for the fc3 component, consistent with Settings, least privilege."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from segflow.catalogue import ACTIONS
from segflow.settings import Settings
from tests.conftest import REPO_ROOT

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

# The fc3 component's own props schema is reference material kept beside the repo (../shared/research/),
# not copied into it; CI's clone has it there too.
SCHEMA_PATH = REPO_ROOT.parent / "shared" / "research" / "fc3-props.schema.json"
SAMPLE_ACCOUNT = "1234567890123456"
_VARIABLE = re.compile(r"\$\{([^{}]+)\}")


def load_s_yaml() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO_ROOT / "s.yaml").read_text(encoding="utf-8"))
    return document


def substitute(value: Any, variables: dict[str, Any]) -> Any:
    """Resolve `${vars.x}` and `${config('AccountID')}` the way `s deploy` would, with sample values."""

    def resolve(expression: str) -> str:
        if expression == "config('AccountID')":
            return SAMPLE_ACCOUNT
        if expression.startswith("vars."):
            return str(substitute(variables[expression[5:]], variables))
        raise AssertionError(f"s.yaml uses ${{{expression}}}, which this test does not know")

    if isinstance(value, str):
        previous = None
        while previous != value:
            previous, value = value, _VARIABLE.sub(lambda m: resolve(m.group(1)), value)
        return value
    if isinstance(value, list):
        return [substitute(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, variables) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def resources() -> dict[str, dict[str, Any]]:
    document = load_s_yaml()
    variables = document["vars"]
    return {
        name: substitute(resource["props"], variables) for name, resource in document["resources"].items()
    }


def test_s_yaml_is_edition_3_with_two_fc3_functions() -> None:
    document = load_s_yaml()
    assert document["edition"] == "3.0.0"
    assert {name: r["component"] for name, r in document["resources"].items()} == {
        "on-upload": "fc3",
        "collect-jobs": "fc3",
    }


def test_every_function_validates_against_the_fc3_schema(resources: dict[str, dict[str, Any]]) -> None:
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"the fc3 props schema is not at {SCHEMA_PATH} (research file outside the repo)")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for name, props in resources.items():
        jsonschema.validate(props, schema)  # raises with the failing path
        # The schema allows unknown keys; a misspelt one would be silently ignored by s deploy.
        assert set(props) <= set(schema["properties"]), f"{name}: {set(props) - set(schema['properties'])}"


def test_no_placeholder_is_left_after_substitution(resources: dict[str, dict[str, Any]]) -> None:
    assert "${" not in json.dumps(resources)


def test_functions_use_python310_the_layer_and_the_handlers_in_the_repo(
    resources: dict[str, dict[str, Any]],
) -> None:
    for props in resources.values():
        assert props["runtime"] == "python3.10" and props["handler"] == "index.handler"
        assert props["layers"] == [f"acs:fc:cn-shanghai:{SAMPLE_ACCOUNT}:layers/segflow/versions/1"]
        assert (REPO_ROOT / props["code"] / "index.py").is_file()
        assert props["role"] == f"acs:ram::{SAMPLE_ACCOUNT}:role/segflow-fc-role"
        assert "asyncInvokeConfig" in props


def test_oss_trigger_watches_only_the_input_prefix_for_creations(
    resources: dict[str, dict[str, Any]],
) -> None:
    (trigger,) = resources["on-upload"]["triggers"]
    assert trigger["triggerType"] == "oss"
    assert trigger["sourceArn"] == f"acs:oss:cn-shanghai:{SAMPLE_ACCOUNT}:segflow-demo"
    assert sorted(trigger["triggerConfig"]["events"]) == [
        "oss:ObjectCreated:CompleteMultipartUpload",
        "oss:ObjectCreated:PostObject",
        "oss:ObjectCreated:PutObject",
    ]
    settings = Settings.from_env(resources["on-upload"]["environmentVariables"])
    prefix = trigger["triggerConfig"]["filter"]["key"]["prefix"]
    assert prefix == settings.input_prefix
    # The classic infinite loop: the trigger must not match anything the functions write.
    assert not any(own.startswith(prefix) or prefix.startswith(own) for own in settings.own_prefixes)


def test_timer_runs_every_minute_and_names_the_bucket(resources: dict[str, dict[str, Any]]) -> None:
    (trigger,) = resources["collect-jobs"]["triggers"]
    assert trigger["triggerType"] == "timer"
    config = trigger["triggerConfig"]
    assert config["cronExpression"] == "0 */1 * * * *" and config["enable"] is True
    assert json.loads(config["payload"]) == {"buckets": ["segflow-demo"]}


def test_environment_is_valid_settings_without_secrets(resources: dict[str, dict[str, Any]]) -> None:
    for props in resources.values():
        environment = props["environmentVariables"]
        assert all(isinstance(value, str) for value in environment.values())  # FC wants strings
        settings = Settings.from_env(environment)
        assert settings.endpoints_are_alibaba and settings.require_region
        assert not any("SECRET" in name or "TOKEN" in name or "APPCODE" in name for name in environment)
    assert resources["on-upload"]["environmentVariables"] == resources["collect-jobs"]["environmentVariables"]


def test_collector_lease_outlives_its_timeout(resources: dict[str, dict[str, Any]]) -> None:
    props = resources["collect-jobs"]
    assert Settings.from_env(props["environmentVariables"]).lease_seconds > props["timeout"]


def test_no_secret_like_value_anywhere_in_s_yaml() -> None:
    text = (REPO_ROOT / "s.yaml").read_text(encoding="utf-8")
    assert not re.search(r"LTAI[0-9A-Za-z]{12,}|CAIS[0-9A-Za-z+/=]{16,}|accessKeySecret", text)


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


def test_policy_names_only_vision_actions_segflow_can_call() -> None:
    vision = {a for a, _ in grants(load_policy()) if not a.startswith("oss:")}
    allowed = {f"{action.product}:{name}" for name, action in ACTIONS.items() if action.product != "picwish"}
    allowed |= {"imageseg:GetAsyncJobResult", "videoseg:GetAsyncJobResult"}
    assert vision == allowed
    assert not any(action.endswith(":*") or action == "*" for action, _ in grants(load_policy()))
    assert "imageseg:SegmentCommonImage" in vision and "videoseg:SegmentVideoBody" in vision
