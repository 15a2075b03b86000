from __future__ import annotations

import pytest

from flask_poststack.config import check_api_key
from flask_poststack.config import DEFAULTS
from flask_poststack.config import load_settings
from flask_poststack.config import Settings
from flask_poststack.errors import ConfigurationError

KEY = "sk_test_0123456789abcdef"


def test_defaults_match_design() -> None:
    settings = load_settings({})
    assert settings.api_key is None
    assert settings.base_url == "https://api.poststack.dev"
    assert settings.timeout == 30
    assert settings.max_retries == 3
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.queue == "poststack"
    assert settings.suppress_send is None
    assert settings.webhook_secrets == ()


def test_first_source_wins_and_none_falls_through() -> None:
    settings = load_settings(
        {"POSTSTACK_QUEUE": "mail", "POSTSTACK_BASE_URL": None},
        {"POSTSTACK_QUEUE": "other", "POSTSTACK_BASE_URL": "http://127.0.0.1:1"},
    )
    assert settings.queue == "mail"
    assert settings.base_url == "http://127.0.0.1:1"


def test_strings_from_the_environment_are_parsed() -> None:
    settings = load_settings(
        {
            "POSTSTACK_TIMEOUT": "2.5",
            "POSTSTACK_MAX_RETRIES": "0",
            "POSTSTACK_SUPPRESS_SEND": "yes",
            "POSTSTACK_DEFAULT_TAGS": "a, b,,c",
            "POSTSTACK_WEBHOOK_SECRET": "whsec_new,whsec_old",
            "POSTSTACK_RETRY_INTERVALS": "1, 2,3",
        }
    )
    assert settings.timeout == 2.5
    assert settings.max_retries == 0
    assert settings.suppress_send is True
    assert settings.default_tags == ("a", "b", "c")
    assert settings.webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.retry_intervals == (1, 2, 3)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("POSTSTACK_TIMEOUT", "soon"),
        ("POSTSTACK_TIMEOUT", "0"),
        ("POSTSTACK_MAX_RETRIES", "2.5"),
        ("POSTSTACK_MAX_RETRIES", "-1"),
        ("POSTSTACK_SUPPRESS_SEND", "maybe"),
        ("POSTSTACK_RETRY_INTERVALS", "1,x"),
        ("POSTSTACK_JOB_TIMEOUT", True),
        ("POSTSTACK_QUEUE", ""),
        ("POSTSTACK_DEFAULT_TAGS", [1, 2]),
        ("POSTSTACK_BASE_URL", "api.poststack.dev"),
        ("POSTSTACK_BASE_URL", "ftp://api.poststack.dev"),
        ("POSTSTACK_REDIS_URL", "localhost:6379"),
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({key: value})
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


@pytest.mark.parametrize("value", [None, "", "pk_live_Xy9", "sk_live_", "s3cret-Xy9"])
def test_bad_api_keys_are_refused_without_echoing_them(value: str | None) -> None:
    with pytest.raises(ConfigurationError, match="POSTSTACK_API_KEY") as info:
        check_api_key(value)
    if value and "Xy9" in value:
        assert value not in str(info.value)


def test_repr_hides_the_key_and_secrets() -> None:
    settings = Settings(api_key=KEY, webhook_secrets=("whsec_s3cret",))
    text = repr(settings)
    assert KEY not in text
    assert "s3cret" not in text
    assert "mode='test'" in text
    assert Settings(api_key="sk_live_abc123").mode == "live"


def test_every_setting_has_its_documented_key() -> None:
    keys = load_settings({}).as_config()
    assert set(keys) == set(DEFAULTS)
    with open("docs/config.md") as docs:
        text = docs.read()
    for key in keys:
        assert f"`{key}`" in text, f"{key} is not in the configuration reference"


def test_redis_password_is_not_echoed_in_url_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"POSTSTACK_REDIS_URL": "http://:s3cret@host:6379"})
    assert "s3cret" not in str(info.value)


def test_job_timeout_outlasts_the_sdks_own_retries() -> None:
    assert load_settings({}).job_timeout == 30 * 4 + 60 * 3 + 10
    assert load_settings({"POSTSTACK_MAX_RETRIES": "0"}).job_timeout == 40
    assert load_settings({"POSTSTACK_JOB_TIMEOUT": "45"}).job_timeout == 45
