"""Settings.from_env: defaults, every variable, and a ConfigError naming the variable for bad values."""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow.settings import Settings


def test_defaults_match_the_documented_table() -> None:
    settings = Settings.from_env({})
    assert settings.input_prefix == "incoming/"
    assert settings.own_prefixes == ("segmented/", "segflow-jobs/", "segflow-failed/")
    assert settings.imageseg_endpoint == "https://imageseg.cn-shanghai.aliyuncs.com"
    assert settings.videoseg_endpoint == "https://videoseg.cn-shanghai.aliyuncs.com"
    assert settings.picwish_endpoint == "https://picwish.market.alicloudapi.com"
    assert (settings.signature_version, settings.oversize, settings.presign_seconds) == ("v3", "fit", 1800)
    assert (settings.region, settings.require_region) == ("cn-shanghai", True)
    assert (settings.qps, settings.collect_concurrency) == (2.0, 4)
    assert (settings.lease_seconds, settings.max_resubmits) == (300, 3)
    assert settings.rules == () and settings.picwish_appcode is None
    assert not settings.in_function_compute
    assert settings == Settings()  # the dataclass defaults and from_env agree


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "SEGFLOW_INPUT_PREFIX": "uploads",
            "SEGFLOW_OUTPUT_PREFIX": "out/",
            "SEGFLOW_JOBS_PREFIX": "/jobs/",
            "SEGFLOW_FAILED_PREFIX": "failed",
            "SEGFLOW_IMAGESEG_ENDPOINT": "http://127.0.0.1:8400",
            "SEGFLOW_VIDEOSEG_ENDPOINT": "127.0.0.1:8400",
            "SEGFLOW_PICWISH_ENDPOINT": "http://127.0.0.1:8400/",
            "SEGFLOW_SIGNATURE_VERSION": "V1",
            "SEGFLOW_PICWISH_APPCODE": "appcode-123456",
            "SEGFLOW_RULES": '[{"suffix": ".jpg", "action": "SegmentHDBody"}]',
            "SEGFLOW_OVERSIZE": "reject",
            "SEGFLOW_PRESIGN_SECONDS": "600",
            "SEGFLOW_REGION": "cn-beijing",
            "SEGFLOW_QPS": "0.5",
            "SEGFLOW_COLLECT_CONCURRENCY": "8",
            "SEGFLOW_LEASE_SECONDS": "120",
            "SEGFLOW_MAX_RESUBMITS": "0",
            "SEGFLOW_OSS_ENDPOINT": "oss-cn-shanghai.aliyuncs.com",
        }
    )
    assert (settings.input_prefix, settings.output_prefix) == ("uploads/", "out/")
    assert (settings.jobs_prefix, settings.failed_prefix) == ("jobs/", "failed/")
    assert settings.imageseg_endpoint == "http://127.0.0.1:8400"
    assert settings.videoseg_endpoint == "https://127.0.0.1:8400"
    assert settings.picwish_endpoint == "http://127.0.0.1:8400"
    assert settings.signature_version == "v1" and settings.picwish_appcode == "appcode-123456"
    assert settings.rules == ({"suffix": ".jpg", "action": "SegmentHDBody"},)
    assert (settings.oversize, settings.presign_seconds, settings.region) == ("reject", 600, "cn-beijing")
    assert (settings.qps, settings.collect_concurrency) == (0.5, 8)
    assert (settings.lease_seconds, settings.max_resubmits) == (120, 0)
    assert settings.oss_endpoint == "https://oss-cn-shanghai.aliyuncs.com"
    assert settings.require_region is False  # local endpoints: no region rule by default


def test_require_region_can_be_forced_either_way() -> None:
    local = {
        "SEGFLOW_IMAGESEG_ENDPOINT": "http://127.0.0.1:1",
        "SEGFLOW_VIDEOSEG_ENDPOINT": "http://127.0.0.1:1",
    }
    assert Settings.from_env({**local, "SEGFLOW_REQUIRE_REGION": "true"}).require_region is True
    assert Settings.from_env({"SEGFLOW_REQUIRE_REGION": "0"}).require_region is False


def test_empty_values_mean_unset() -> None:
    assert Settings.from_env({"SEGFLOW_QPS": "", "SEGFLOW_OUTPUT_PREFIX": "  "}) == Settings()


def test_appcode_and_credentials_never_show_in_repr() -> None:
    settings = Settings.from_env(
        {
            "SEGFLOW_PICWISH_APPCODE": "appcode-secret-1",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lt-secret-xyz",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "CAIS-token-xyz",
        }
    )
    text = repr(settings)
    for secret in ("appcode-secret-1", "lt-secret-xyz", "CAIS-token-xyz"):
        assert secret not in text
    assert settings.credential_env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] == "lt-secret-xyz"


def test_only_credential_variables_are_kept_from_the_environment() -> None:
    settings = Settings.from_env({"HOME": "/root", "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id"})
    assert dict(settings.credential_env) == {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id"}


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):  # immutable (a NamedTuple: no attribute can be set)
        Settings().qps = 5  # type: ignore[misc]
    assert "appcode-secret" not in repr(Settings(picwish_appcode="appcode-secret"))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SEGFLOW_SIGNATURE_VERSION", "v2"),
        ("SEGFLOW_OVERSIZE", "crop"),
        ("SEGFLOW_PRESIGN_SECONDS", "ten"),
        ("SEGFLOW_PRESIGN_SECONDS", "30"),
        ("SEGFLOW_PRESIGN_SECONDS", "604801"),
        ("SEGFLOW_QPS", "0"),
        ("SEGFLOW_QPS", "nan"),
        ("SEGFLOW_QPS", "fast"),
        ("SEGFLOW_COLLECT_CONCURRENCY", "0"),
        ("SEGFLOW_COLLECT_CONCURRENCY", "65"),
        ("SEGFLOW_LEASE_SECONDS", "5"),
        ("SEGFLOW_MAX_RESUBMITS", "-1"),
        ("SEGFLOW_REQUIRE_REGION", "maybe"),
        ("SEGFLOW_REGION", "Shanghai"),
        ("SEGFLOW_IMAGESEG_ENDPOINT", "ftp://imageseg.example"),
        ("SEGFLOW_VIDEOSEG_ENDPOINT", "https://host:notaport"),
        ("SEGFLOW_PICWISH_ENDPOINT", "https://"),
        ("SEGFLOW_OSS_ENDPOINT", "https://oss.example/?x=1"),
        ("SEGFLOW_RULES", "[{"),
        ("SEGFLOW_RULES", '{"action": "SegmentBody"}'),
        ("SEGFLOW_RULES", '["SegmentBody"]'),
        ("SEGFLOW_OUTPUT_PREFIX", "/"),
        ("SEGFLOW_JOBS_PREFIX", "a/../b"),
    ],
)
def test_invalid_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert variable in str(caught.value)


def test_input_under_an_output_prefix_is_refused_it_would_never_be_processed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SEGFLOW_INPUT_PREFIX": "segmented/in/"})
    assert "SEGFLOW_INPUT_PREFIX" in str(caught.value) and "SEGFLOW_OUTPUT_PREFIX" in str(caught.value)


def test_overlapping_own_prefixes_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SEGFLOW_JOBS_PREFIX": "segmented/jobs/"})
    assert "SEGFLOW_JOBS_PREFIX" in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "culprit"),
    [
        ({"SEGFLOW_INPUT_PREFIX": "/"}, "SEGFLOW_INPUT_PREFIX"),  # the whole bucket holds our outputs too
        ({"SEGFLOW_INPUT_PREFIX": "data/", "SEGFLOW_OUTPUT_PREFIX": "data/out/"}, "SEGFLOW_OUTPUT_PREFIX"),
        ({"SEGFLOW_INPUT_PREFIX": "data/", "SEGFLOW_JOBS_PREFIX": "data/jobs/"}, "SEGFLOW_JOBS_PREFIX"),
        ({"SEGFLOW_INPUT_PREFIX": "data/", "SEGFLOW_FAILED_PREFIX": "data/failed/"}, "SEGFLOW_FAILED_PREFIX"),
    ],
)
def test_own_prefixes_inside_the_input_are_refused_at_start(environ: dict[str, str], culprit: str) -> None:
    """Results written inside the input prefix would trigger the function again and be paid for again."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    assert culprit in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "region", "expected"),
    [
        (
            {"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "on-upload"},
            None,
            "https://oss-cn-shanghai-internal.aliyuncs.com",
        ),
        ({"FC_FUNCTION_NAME": "on-upload"}, "cn-shanghai", "https://oss-cn-shanghai-internal.aliyuncs.com"),
        ({"FC_REGION": "cn-shanghai"}, "cn-hangzhou", "https://oss-cn-hangzhou.aliyuncs.com"),
        ({}, None, "https://oss-cn-shanghai.aliyuncs.com"),
        ({"SEGFLOW_REGION": "cn-beijing"}, None, "https://oss-cn-beijing.aliyuncs.com"),
        (
            {"FC_REGION": "cn-shanghai", "SEGFLOW_OSS_ENDPOINT": "http://127.0.0.1:9000"},
            None,
            "http://127.0.0.1:9000",
        ),
    ],
)
def test_oss_endpoint_is_internal_only_inside_fc_for_the_functions_region(
    environ: dict[str, str], region: str | None, expected: str
) -> None:
    assert Settings.from_env(environ).oss_endpoint_for(region) == expected


def test_log_level_is_one_of_the_logging_levels_named_in_its_error() -> None:
    assert Settings.from_env({}).log_level == "INFO"
    assert Settings.from_env({"SEGFLOW_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    with pytest.raises(
        ConfigError, match="SEGFLOW_LOG_LEVEL='loud' must be one of debug, info, warning, error"
    ):
        Settings.from_env({"SEGFLOW_LOG_LEVEL": "loud"})


def test_the_engine_on_function_compute_is_signed_for_its_http_trigger() -> None:
    # Its trigger URL replaces both endpoints; the functions sign with their own STS keys (no shared secret).
    trigger = "https://segflow-engine-abcdefghij.cn-shanghai.fcapp.run"
    settings = Settings.from_env(
        {
            "SEGFLOW_IMAGESEG_ENDPOINT": trigger,
            "SEGFLOW_VIDEOSEG_ENDPOINT": trigger,
            "SEGFLOW_SIGNATURE_VERSION": "FC-Trigger",
        }
    )
    assert settings.signature_version == "fc-trigger"
    assert settings.openplatform_endpoint == trigger  # the engine grants its own temporary uploads
