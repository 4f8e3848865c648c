"""s.yaml as Serverless Devs 3 renders it: the real `s preview -o json`, offline, with a throwaway HOME.

GIVEN an access alias with a sample AccountID, WHEN `s preview` renders s.yaml with and without the
user's environment variables, THEN the layer, roles and bucket come from the environment or from defaults
built from the region and the alias's account, nothing is left unrendered, each function's props pass the
fc3 component's schema, and the functions' environment is valid `Settings` within FC's documented limits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from segflow.settings import Settings
from tests.conftest import REPO_ROOT
from tests.support.engine_package import load_builder
from tests.support.serverless_devs import ServerlessDevs, copy_template, pinned_version

jsonschema = pytest.importorskip("jsonschema")

S_YAML = REPO_ROOT / "s.yaml"
# The fc3 component's props schema is reference material kept beside the checkout, not in it.
SCHEMA_PATH = REPO_ROOT.parent / "shared" / "research" / "fc3-props.schema.json"
ACCOUNT = "1234567890123456"
USER_ENV = {
    "SEGFLOW_BUCKET": "my-photos",
    "SEGFLOW_LAYER_ARN": "acs:fc:cn-shanghai:1234567890123456:layers/segflow/versions/7",
    "SEGFLOW_ROLE_ARN": "acs:ram::1234567890123456:role/my-segflow-role",
    "SEGFLOW_OSS_TRIGGER_ROLE_ARN": "acs:ram::1234567890123456:role/my-oss-trigger-role",
    "SEGFLOW_INPUT_URL": "presign",
    "SEGFLOW_PRESIGN_ENDPOINT": "https://img.example.com",
    "SEGFLOW_RULES": json.dumps([{"prefix": "incoming/shop/", "action": "SegmentCommodity"}]),
    "SEGFLOW_PICWISH_APPCODE": "sample-appcode-0123456789",
}
# What a user sets after `s engine deploy` (docs/engine-on-fc.md): the trigger's URL, and signing for it.
TRIGGER_URL = "https://segflow-engine-abcdefghij.cn-shanghai.fcapp.run"
ENGINE_ENV = {
    "SEGFLOW_IMAGESEG_ENDPOINT": TRIGGER_URL,
    "SEGFLOW_VIDEOSEG_ENDPOINT": TRIGGER_URL,
    "SEGFLOW_SIGNATURE_VERSION": "fc-trigger",
    "SEGFLOW_ENGINE_ROLE_ARN": "acs:ram::1234567890123456:role/my-engine-role",
}
# FC docs, "Configure environment variables": a key starts with a letter and holds letters, digits and
# underscores; all variables together stay within 4 KB; FC_* is reserved.
_FC_ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FC_ENV_LIMIT_BYTES = 4 * 1024


@pytest.fixture(scope="module")
def sdevs(tmp_path_factory: pytest.TempPathFactory) -> ServerlessDevs:
    cli = ServerlessDevs(tmp_path_factory.mktemp("s-home"))
    cli.add_alias(ACCOUNT)
    return cli


@pytest.fixture(scope="module")
def defaults(sdevs: ServerlessDevs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sdevs.render(copy_template(S_YAML, tmp_path_factory.mktemp("defaults")))


@pytest.fixture(scope="module")
def with_engine(sdevs: ServerlessDevs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sdevs.render(copy_template(S_YAML, tmp_path_factory.mktemp("engine")), env=ENGINE_ENV)


@pytest.fixture(scope="module")
def custom(sdevs: ServerlessDevs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return sdevs.render(copy_template(S_YAML, tmp_path_factory.mktemp("custom")), env=USER_ENV)


def props(document: dict[str, Any], name: str) -> dict[str, Any]:
    resource: dict[str, Any] = document["resources"][name]
    assert resource["component"] == "fc3"
    value: dict[str, Any] = resource["props"]
    return value


def environment(document: dict[str, Any]) -> dict[str, str]:
    upload = props(document, "on-upload")["environmentVariables"]
    assert props(document, "collect-jobs")["environmentVariables"] == upload  # one configuration, two roles
    return dict(upload)


def test_setup_installed_the_pinned_cli(sdevs: ServerlessDevs) -> None:
    assert sdevs.version() == pinned_version()


def test_nothing_is_left_unrendered(defaults: dict[str, Any], custom: dict[str, Any]) -> None:
    for document in (defaults, custom):
        assert "${" not in json.dumps(document)
        assert set(document["resources"]) == {"on-upload", "collect-jobs", "engine"}


def test_every_function_validates_against_the_fc3_schema(
    defaults: dict[str, Any], custom: dict[str, Any], with_engine: dict[str, Any]
) -> None:
    if not SCHEMA_PATH.is_file():
        pytest.skip(f"the fc3 props schema is not at {SCHEMA_PATH} (reference file beside the checkout)")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    for document in (defaults, custom, with_engine):
        for name in document["resources"]:
            resource_props = props(document, name)
            jsonschema.validate(resource_props, schema)  # raises with the failing path
            # The schema allows unknown keys; a misspelt one would be silently ignored by s deploy.
            unknown = set(resource_props) - set(schema["properties"])
            assert not unknown, f"{name}: {unknown}"


def test_defaults_are_built_from_the_region_and_the_alias_account(defaults: dict[str, Any]) -> None:
    for name in ("on-upload", "collect-jobs"):
        function = props(defaults, name)
        assert function["region"] == "cn-shanghai"
        assert function["layers"] == [f"acs:fc:cn-shanghai:{ACCOUNT}:layers/segflow/versions/1"]
        assert function["role"] == f"acs:ram::{ACCOUNT}:role/segflow-fc-role"
    (trigger,) = props(defaults, "on-upload")["triggers"]
    assert trigger["invocationRole"] == f"acs:ram::{ACCOUNT}:role/aliyunosseventnotificationrole"
    assert trigger["sourceArn"] == f"acs:oss:cn-shanghai:{ACCOUNT}:segflow-demo"
    env = environment(defaults)
    assert (env["SEGFLOW_INPUT_URL"], env["SEGFLOW_PRESIGN_ENDPOINT"]) == ("upload", "")
    assert (env["SEGFLOW_RULES"], env["SEGFLOW_PICWISH_APPCODE"]) == ("", "")


def test_default_layer_follows_the_region(sdevs: ServerlessDevs, tmp_path: Path) -> None:
    text = S_YAML.read_text(encoding="utf-8")
    moved = re.sub(r"^(  region: )cn-shanghai\b", r"\1cn-hangzhou", text, count=1, flags=re.MULTILINE)
    assert moved != text, "s.yaml has no `region: cn-shanghai` under vars"
    document = sdevs.render(copy_template(S_YAML, tmp_path, text=moved))
    function = props(document, "on-upload")
    assert function["region"] == "cn-hangzhou"
    assert function["layers"] == [f"acs:fc:cn-hangzhou:{ACCOUNT}:layers/segflow/versions/1"]


def test_user_values_come_from_the_environment(custom: dict[str, Any]) -> None:
    for name in ("on-upload", "collect-jobs"):
        function = props(custom, name)
        assert function["layers"] == [USER_ENV["SEGFLOW_LAYER_ARN"]]
        assert function["role"] == USER_ENV["SEGFLOW_ROLE_ARN"]
    (oss,) = props(custom, "on-upload")["triggers"]
    assert oss["invocationRole"] == USER_ENV["SEGFLOW_OSS_TRIGGER_ROLE_ARN"]
    assert oss["sourceArn"] == f"acs:oss:cn-shanghai:{ACCOUNT}:my-photos"
    (timer,) = props(custom, "collect-jobs")["triggers"]
    assert json.loads(timer["triggerConfig"]["payload"]) == {"buckets": ["my-photos"]}
    env = environment(custom)
    for name in ("SEGFLOW_INPUT_URL", "SEGFLOW_PRESIGN_ENDPOINT", "SEGFLOW_RULES", "SEGFLOW_PICWISH_APPCODE"):
        assert env[name] == USER_ENV[name]


def test_shell_wins_over_a_dotenv_file_beside_s_yaml(sdevs: ServerlessDevs, tmp_path: Path) -> None:
    template = copy_template(S_YAML, tmp_path)
    (tmp_path / ".env").write_text(
        "SEGFLOW_BUCKET=from-dotenv\nSEGFLOW_INPUT_URL=presign\n", encoding="utf-8"
    )
    document = sdevs.render(template, env={"SEGFLOW_BUCKET": "from-shell"})
    (oss,) = props(document, "on-upload")["triggers"]
    assert oss["sourceArn"].endswith(":from-shell")
    assert environment(document)["SEGFLOW_INPUT_URL"] == "presign"


def test_oss_trigger_watches_only_the_input_prefix_for_creations(defaults: dict[str, Any]) -> None:
    (trigger,) = props(defaults, "on-upload")["triggers"]
    assert trigger["triggerType"] == "oss"
    # A server-side copy into the input prefix is an upload too (CopyObject).
    assert sorted(trigger["triggerConfig"]["events"]) == [
        "oss:ObjectCreated:CompleteMultipartUpload",
        "oss:ObjectCreated:CopyObject",
        "oss:ObjectCreated:PostObject",
        "oss:ObjectCreated:PutObject",
    ]
    settings = Settings.from_env(environment(defaults))
    prefix = trigger["triggerConfig"]["filter"]["key"]["prefix"]
    assert prefix == settings.input_prefix
    # The classic infinite loop: the trigger must not match anything the functions write.
    assert not any(own.startswith(prefix) or prefix.startswith(own) for own in settings.own_prefixes)


def test_timer_runs_every_minute_and_names_the_bucket(defaults: dict[str, Any]) -> None:
    (trigger,) = props(defaults, "collect-jobs")["triggers"]
    assert trigger["triggerType"] == "timer"
    config = trigger["triggerConfig"]
    assert config["cronExpression"] == "0 */1 * * * *" and config["enable"] is True
    assert json.loads(config["payload"]) == {"buckets": ["segflow-demo"]}


def test_environment_is_valid_settings_within_fc_limits(
    defaults: dict[str, Any], custom: dict[str, Any]
) -> None:
    for document in (defaults, custom):
        env = environment(document)
        assert all(isinstance(value, str) for value in env.values())  # FC wants strings
        assert all(_FC_ENV_KEY.match(name) and not name.startswith("FC_") for name in env)
        assert sum(len(k.encode()) + len(v.encode()) for k, v in env.items()) <= FC_ENV_LIMIT_BYTES
        settings = Settings.from_env(env)
        assert settings.endpoints_are_alibaba and settings.require_region
    assert Settings.from_env(environment(defaults)).picwish_appcode is None
    assert Settings.from_env(environment(custom)).rules == tuple(json.loads(USER_ENV["SEGFLOW_RULES"]))


def test_functions_use_python310_the_layer_and_the_handlers_in_the_repo(defaults: dict[str, Any]) -> None:
    for name in ("on-upload", "collect-jobs"):
        function = props(defaults, name)
        assert function["runtime"] == "python3.10" and function["handler"] == "index.handler"
        assert (REPO_ROOT / function["code"] / "index.py").is_file()
        assert "asyncInvokeConfig" in function


def test_collector_lease_outlives_its_timeout(defaults: dict[str, Any]) -> None:
    function = props(defaults, "collect-jobs")
    assert Settings.from_env(environment(defaults)).lease_seconds > function["timeout"]


# -- the engine ---------------------------------------------------------------------------------------------


def test_the_engine_is_a_custom_runtime_web_function_of_the_built_package(defaults: dict[str, Any]) -> None:
    engine = props(defaults, "engine")
    builder = load_builder()
    assert engine["runtime"] == "custom.debian10"  # Python 3.10.9, what the package is built for
    assert REPO_ROOT / engine["code"] == builder.DEFAULT_OUT  # what `make engine-fc` writes
    runtime = engine["customRuntimeConfig"]
    assert runtime["command"] == ["/code/bootstrap"]  # FC unpacks the code package at /code
    # The server listens where FC sends requests (fc-engine.md §1, "Port").
    assert str(runtime["port"]) == engine["environmentVariables"]["SEGFLOW_ENGINE_PORT"]


def test_the_engines_size_is_within_fcs_rules(defaults: dict[str, Any]) -> None:
    """FC 3.0 CreateFunctionInput: memory 128 MB–32 GB in multiples of 64 MB, vCPU in multiples of 0.05 with
    vCPU : memory (GB) between 1:1 and 1:4; instanceConcurrency 1–200 (fc-engine.md §1, §3)."""
    engine = props(defaults, "engine")
    cpu, memory_gb = engine["cpu"], engine["memorySize"] / 1024
    assert engine["memorySize"] % 64 == 0 and round(cpu / 0.05, 6).is_integer()
    assert cpu <= memory_gb <= 4 * cpu
    assert 1 <= engine["instanceConcurrency"] <= 200
    assert engine["diskSize"] in (512, 10240)


def test_the_engine_loads_its_models_in_the_initializer(defaults: dict[str, Any]) -> None:
    """Custom runtime lifecycle hooks: `instanceLifecycleConfig.initializer` makes FC call POST /initialize
    before the first request (at most 300 s); FC gives the server itself 120 s to listen."""
    initializer = props(defaults, "engine")["instanceLifecycleConfig"]["initializer"]
    assert 0 < initializer["timeout"] <= 300 and initializer["handler"]


def test_the_engine_is_reached_through_a_signed_http_trigger(defaults: dict[str, Any]) -> None:
    (trigger,) = props(defaults, "engine")["triggers"]
    assert trigger["triggerType"] == "http"
    assert trigger["triggerConfig"]["authType"] == "function"  # ACS3 signature, checked by FC's gateway
    assert {"GET", "POST"} <= set(trigger["triggerConfig"]["methods"])


def test_the_engine_has_its_own_role(defaults: dict[str, Any], with_engine: dict[str, Any]) -> None:
    assert props(defaults, "engine")["role"] == f"acs:ram::{ACCOUNT}:role/segflow-engine-role"
    assert props(with_engine, "engine")["role"] == ENGINE_ENV["SEGFLOW_ENGINE_ROLE_ARN"]
    assert props(defaults, "engine")["role"] != props(defaults, "on-upload")["role"]


def test_the_engines_environment_is_within_fcs_limits(defaults: dict[str, Any]) -> None:
    env = props(defaults, "engine")["environmentVariables"]
    assert all(isinstance(value, str) for value in env.values())
    assert all(_FC_ENV_KEY.match(name) and not name.startswith("FC_") for name in env)
    assert env["SEGFLOW_ENGINE_BUCKET"] == "segflow-demo" and env["SEGFLOW_ENGINE_AUTH"] == "fc-gateway"


def test_the_functions_call_the_engine_when_the_user_says_so(with_engine: dict[str, Any]) -> None:
    settings = Settings.from_env(environment(with_engine))
    assert settings.imageseg_endpoint == settings.videoseg_endpoint == TRIGGER_URL
    assert settings.signature_version == "fc-trigger"
    assert settings.openplatform_endpoint == TRIGGER_URL  # the engine grants its own temporary uploads
