"""`python -m segflow_engine.fc`, what the Function Compute package's bootstrap runs (fc-engine.md §1), and
the configuration it reads from the function's environment (`segflow_engine.fcdeploy`).

FC's custom runtime: the server must bind 0.0.0.0 (127.0.0.1 is never reached: "Ping CA failed"), and keep
connections with an idle timeout of at least 15 minutes (else "Process exited unexpectedly" / 502). FC sets
FC_FUNCTION_NAME, FC_REGION, FC_ACCOUNT_ID and the role's key in ALIBABA_CLOUD_* ("Environment
variables"); an instance may be stopped at any time, so inside FC the engine's state must be in OSS.
"""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow_engine import fc, served
from segflow_engine.command import server_limits
from segflow_engine.fcdeploy import FcDeployment
from segflow_engine.fcinvoke import DEFAULT_ENDPOINT, fc_endpoint
from segflow_engine.fetch import read_input_url

FC = {
    "FC_FUNCTION_NAME": "segflow-engine",
    "FC_REGION": "cn-shanghai",
    "FC_ACCOUNT_ID": "1234567890123456",
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.NEngine",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "engine-secret",
    "ALIBABA_CLOUD_SECURITY_TOKEN": "CAIS+token",
}
DEPLOYED = {**FC, "SEGFLOW_ENGINE_AUTH": "fc-gateway", "SEGFLOW_ENGINE_BUCKET": "segflow-demo"}


def test_fc_defaults_bind_every_address_and_keep_connections_over_15_minutes() -> None:
    args = fc.parse_args(["--port", "9000"])
    assert (args.host, args.port, args.log_level) == ("0.0.0.0", 9000, "info")
    assert args.workers == 1  # a second model call at once gains nothing on 2 vCPU (bench/engine_fc.py)
    assert server_limits(args).idle_timeout >= 15 * 60


def test_options_given_after_the_defaults_win() -> None:
    args = fc.parse_args(["--port", "9000", "--workers", "2", "--idle-timeout", "1200"])
    assert (args.workers, server_limits(args).idle_timeout) == (2, 1200.0)


def test_a_bad_action_list_stops_the_start_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        served, "served_actions", lambda: served.actions_from_env({"SEGFLOW_ENGINE_ACTIONS": "x"})
    )
    assert fc.main(["--port", "0"]) == 2
    assert "no action or group named 'x'" in capsys.readouterr().err


def test_inside_fc_without_a_bucket_the_engine_does_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**FC, "SEGFLOW_ENGINE_AUTH": "fc-gateway"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SEGFLOW_ENGINE_BUCKET", raising=False)
    assert fc.main(["--port", "0"]) == 2
    assert "SEGFLOW_ENGINE_BUCKET is not set" in capsys.readouterr().err


def test_the_deployed_engine_reads_its_bucket_oss_and_fc_from_the_environment() -> None:
    deployment = FcDeployment.from_env(DEPLOYED)
    assert (deployment.bucket, deployment.prefix, deployment.trust_gateway) == (
        "segflow-demo",
        "segflow-engine/",
        True,
    )
    # Inside FC, OSS of the function's own region on its internal endpoint, as the layer reads it.
    assert deployment.oss_endpoint == "https://oss-cn-shanghai-internal.aliyuncs.com"
    assert deployment.fc_endpoint == "https://1234567890123456.cn-shanghai.fc.aliyuncs.com"
    assert deployment.function_name == "segflow-engine"
    assert deployment.role is not None and deployment.role.security_token == "CAIS+token"


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({**FC, "SEGFLOW_ENGINE_BUCKET": "b"}, "SEGFLOW_ENGINE_ACCESS_KEYS"),  # anonymous trigger, no keys
        ({**DEPLOYED, "SEGFLOW_ENGINE_PREFIX": "a/../b"}, "SEGFLOW_ENGINE_PREFIX"),
        ({**DEPLOYED, "FC_ACCOUNT_ID": ""}, "FC_ACCOUNT_ID"),
        ({k: v for k, v in DEPLOYED.items() if not k.startswith("ALIBABA")}, "no AccessKey"),
        ({"SEGFLOW_ENGINE_AUTH": "fc-gateway"}, "not Function Compute"),
    ],
    ids=["no-keys-to-check", "bad-prefix", "no-account", "no-role-key", "gateway-outside-fc"],
)
def test_what_cannot_work_is_refused_at_start(environ: dict[str, str], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        FcDeployment.from_env(environ)


def test_outside_fc_without_a_bucket_the_engine_keeps_its_state_on_the_instance() -> None:
    deployment = FcDeployment.from_env({})
    assert (deployment.bucket, deployment.in_function_compute, deployment.trust_gateway) == (
        None,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://oss-cn-shanghai-internal.aliyuncs.com/segflow-demo/a.png", True),
        ("https://segflow-demo.oss-cn-shanghai-internal.aliyuncs.com/a.png", True),  # a bucket of it
        ("http://files.example:8000/a.png", True),  # --allow-input-host
        ("http://100.100.100.200/latest/meta-data", False),  # Alibaba Cloud's metadata: public only
        ("https://oss-cn-shanghai-internal.aliyuncs.com.evil.example/a.png", False),
    ],
)
def test_inputs_are_public_only_but_for_the_oss_endpoint_and_its_buckets(url: str, allowed: bool) -> None:
    rule = FcDeployment.from_env(DEPLOYED).addresses(["files.example:8000"])
    read = read_input_url(url)
    assert read is not None and rule.public_only
    assert rule.allows(read) is allowed


def test_the_fc_endpoint_is_the_template_filled_in() -> None:
    assert (
        fc_endpoint("http://127.0.0.1:9100", account_id="1", region="cn-shanghai") == "http://127.0.0.1:9100"
    )
    assert (
        fc_endpoint(DEFAULT_ENDPOINT, account_id="42", region="cn-beijing")
        == "https://42.cn-beijing.fc.aliyuncs.com"
    )
    with pytest.raises(ConfigError, match="FC_ACCOUNT_ID"):
        fc_endpoint(DEFAULT_ENDPOINT, account_id="", region="cn-shanghai")
