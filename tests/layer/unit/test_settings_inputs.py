"""SEGFLOW_INPUT_URL, SEGFLOW_PRESIGN_ENDPOINT, SEGFLOW_OPENPLATFORM_ENDPOINT: defaults, values, refusals."""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow.settings import Settings


def test_defaults_upload_through_openplatform_and_presign_on_the_public_default_domain() -> None:
    settings = Settings.from_env({})
    assert settings.input_url == "upload"
    assert settings.openplatform_endpoint == "https://openplatform.aliyuncs.com"
    assert settings.presign_endpoint is None
    assert settings.presign_endpoint_for() == "https://oss-cn-shanghai.aliyuncs.com"
    assert settings.presign_endpoint_for("cn-beijing") == "https://oss-cn-beijing.aliyuncs.com"
    assert settings == Settings()


def test_inside_fc_the_default_presign_host_is_public_while_reads_stay_internal() -> None:
    settings = Settings.from_env({"FC_REGION": "cn-hangzhou", "FC_FUNCTION_NAME": "on-upload"})
    assert settings.oss_endpoint_for() == "https://oss-cn-hangzhou-internal.aliyuncs.com"
    assert settings.presign_endpoint_for() == "https://oss-cn-hangzhou.aliyuncs.com"


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "SEGFLOW_INPUT_URL": "Presign",
            "SEGFLOW_PRESIGN_ENDPOINT": "img.example.com/",
            "SEGFLOW_OPENPLATFORM_ENDPOINT": "http://127.0.0.1:8780",
        }
    )
    assert settings.input_url == "presign"
    assert settings.presign_endpoint == "https://img.example.com"
    assert settings.presign_endpoint_for("cn-beijing") == "https://img.example.com"
    assert settings.openplatform_endpoint == "http://127.0.0.1:8780"


def test_a_local_engine_serves_authorize_file_upload_too() -> None:
    """With the vision endpoints on a local engine, AuthorizeFileUpload goes there unless told otherwise."""
    local = Settings.from_env({"SEGFLOW_IMAGESEG_ENDPOINT": "http://127.0.0.1:8780"})
    assert local.openplatform_endpoint == "http://127.0.0.1:8780"
    told = Settings.from_env(
        {
            "SEGFLOW_IMAGESEG_ENDPOINT": "http://127.0.0.1:8780",
            "SEGFLOW_OPENPLATFORM_ENDPOINT": "https://openplatform.aliyuncs.com",
        }
    )
    assert told.openplatform_endpoint == "https://openplatform.aliyuncs.com"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEGFLOW_INPUT_URL", "internal"),
        ("SEGFLOW_PRESIGN_ENDPOINT", "ftp://img.example.com"),
        ("SEGFLOW_PRESIGN_ENDPOINT", "https://img.example.com/?x=1"),
        ("SEGFLOW_OPENPLATFORM_ENDPOINT", "http://127.0.0.1:99999"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
