"""The settings field types a connector gets from the SDK: `VendorUrl` refuses what is no http(s)
URL and, unless the app allows it, link-local and cloud metadata addresses; `WebhookMaxAge`
keeps the replay window of signed webhooks at most an hour. No name is resolved."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from customer_sync.sdk import (
    ALLOW_PRIVATE_URLS,
    MAX_WEBHOOK_AGE_S,
    ConnectorSettings,
    VendorUrl,
    WebhookMaxAge,
    check_vendor_url,
)


class _Settings(ConnectorSettings):
    """A connector's settings model using both types."""

    base_url: VendorUrl = "https://api.example.com"
    webhook_max_age_s: WebhookMaxAge = 300.0


@pytest.mark.parametrize(
    "url",
    ["not a url", "ftp://files.example.com", "https://", "//api.example.com/v1",
     "api.example.com:443", "http://exa mple.com", "http://[fd00:ec2::254"],
    ids=["words", "ftp", "no host", "no scheme", "host:port", "space in host", "broken IPv6"],
)
def test_vendor_url_refuses_what_is_not_an_http_url_with_a_host(url: str) -> None:
    """A base URL that is no http(s) URL with a valid host is refused, private or not."""
    with pytest.raises(ValueError, match="URL|host"):
        check_vendor_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.1.1",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "HTTP://Metadata.Google.Internal./",
        "http://metadata.goog",
        "http://metadata/",
        "http://instance-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://169.254.43518/",
        "http://[::ffff:169.254.169.254]/",
    ],
    ids=["AWS/Azure/GCP metadata", "link-local", "IPv6 link-local", "AWS IPv6 metadata",
         "Alibaba metadata", "GCP name", "GCP name, upper case and root dot", "GCP short domain",
         "GCP short name", "AWS name", "decimal IPv4", "hex IPv4", "two-part IPv4",
         "IPv4-mapped IPv6"],
)
def test_vendor_url_refuses_link_local_and_metadata_addresses(url: str) -> None:
    """A link-local or metadata base URL is refused with the key that would allow it."""
    with pytest.raises(ValueError, match="allow_private_urls = true"):
        check_vendor_url(url)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123", "http://localhost:8123/api", "http://[::1]:8123",
     "http://10.1.2.3", "https://api.hubapi.com", "https://example.zendesk.com"],
    ids=["loopback", "localhost", "IPv6 loopback", "private network", "HubSpot", "Zendesk"],
)
def test_vendor_url_allows_loopback_private_and_public_hosts(url: str) -> None:
    """Loopback, private-network and internet vendor URLs pass unchanged (but stripped)."""
    assert url == check_vendor_url(f"  {url} ")


def test_vendor_url_allows_a_metadata_address_when_the_app_allows_private_urls() -> None:
    """`allow_private=True` lets a link-local address through."""
    assert "http://169.254.169.254" == check_vendor_url(
        "http://169.254.169.254", allow_private=True
    )


def test_settings_model_reads_the_allow_flag_from_the_validation_context() -> None:
    """In a settings model, only the validation context's flag lets a metadata address in."""
    data = {"base_url": "http://169.254.169.254"}

    with pytest.raises(ValidationError) as info:
        _Settings.model_validate(data)
    allowed = _Settings.model_validate(data, context={ALLOW_PRIVATE_URLS: True})

    assert ("base_url",) == info.value.errors()[0]["loc"]
    assert "http://169.254.169.254" == allowed.base_url


def test_vendor_url_error_does_not_repeat_credentials_in_the_url() -> None:
    """The refusal names the host, never the user and password written into the URL."""
    with pytest.raises(ValueError) as info:
        check_vendor_url("http://admin:hunter2-secret@169.254.169.254/")

    assert "169.254.169.254" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "age_s", [300.0, MAX_WEBHOOK_AGE_S], ids=["HubSpot's 300 s", "an hour"]
)
def test_webhook_max_age_up_to_an_hour_is_accepted(age_s: float) -> None:
    """`WebhookMaxAge` accepts any age above zero up to `MAX_WEBHOOK_AGE_S` (3600 s)."""
    assert age_s == _Settings(webhook_max_age_s=age_s).webhook_max_age_s


@pytest.mark.parametrize(
    "age_s",
    [0.0, MAX_WEBHOOK_AGE_S + 1, 365 * 86400.0],
    ids=["zero", "just over an hour", "a year"],
)
def test_webhook_max_age_of_zero_or_over_an_hour_is_refused(age_s: float) -> None:
    """`WebhookMaxAge` refuses zero and anything longer than an hour, naming the field."""
    with pytest.raises(ValidationError) as info:
        _Settings(webhook_max_age_s=age_s)

    assert [("webhook_max_age_s",)] == [e["loc"] for e in info.value.errors()]
