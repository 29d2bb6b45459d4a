"""Field types for a connector's settings model, so that a bad value is refused when the config
is loaded instead of failing at the first request.

`VendorUrl` is the root URL of a vendor API. It must be http(s) with a host, and it must not
point at a link-local address or a cloud metadata service (169.254.169.254,
`metadata.google.internal`, ...): a connector sends the app's credentials to its base URL, and a
request there from a cloud machine reads that machine's own credentials. An app may allow such
an address with `[apps.NAME] allow_private_urls = true`; the config loader passes that flag in
the validation context (`ALLOW_PRIVATE_URLS`). Loopback (127.0.0.1, localhost) and private
networks stay allowed: simulators and self-hosted vendors live there. Names are not resolved,
so the check needs no network: it looks at literal addresses and well-known metadata names.

`WebhookMaxAge` is how old a signed webhook delivery may be and still be accepted: at most
`MAX_WEBHOOK_AGE_S`.

`Seconds` is any other duration setting (a key ending in `_s`): seconds as a number, or text
with a unit, `"15s"`, `"10m"`, `"2h"`, `"180d"`, the one syntax of every duration in the config.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Annotated

from pydantic import AfterValidator, Field, ValidationInfo

from customer_sync.durations import Seconds

__all__ = [
    "ALLOW_PRIVATE_URLS",
    "DEFAULT_MAX_RETRY_AFTER_S",
    "MAX_WEBHOOK_AGE_S",
    "Seconds",
    "VendorUrl",
    "WebhookMaxAge",
    "check_vendor_url",
    "check_webhook_max_age",
]

#: The validation-context key that allows link-local and metadata addresses in a `VendorUrl`.
ALLOW_PRIVATE_URLS = "allow_private_urls"

#: The default longest `Retry-After` a call waits for: 15 minutes. Longer waits (a daily quota,
#: a vendor outage) are the engine's to handle by parking the app. Defined here, beside the other
#: settings' limits, so that the config reads it without importing the retry policy (tenacity);
#: `customer_sync.sdk.retry` exports it as well.
DEFAULT_MAX_RETRY_AFTER_S = 900.0

#: The largest `WebhookMaxAge`, in seconds. A captured delivery can be replayed for as long as
#: it is accepted; HubSpot's own SDK accepts 300 s. An hour leaves room for clock skew and for
#: a vendor's delayed retries while keeping that replay window short.
MAX_WEBHOOK_AGE_S = 3600.0

# Link-local networks: every major cloud serves instance metadata (and credentials) at
# 169.254.169.254 (AWS, Azure, Google Cloud, Oracle, DigitalOcean, OpenStack); fe80::/10 is the
# IPv6 counterpart.
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
# Metadata services outside the link-local ranges.
_METADATA_ADDRESSES = frozenset({
    ipaddress.ip_address("fd00:ec2::254"),  # AWS, IPv6 instance metadata
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
})
_METADATA_NAMES = frozenset({
    "metadata.google.internal",  # Google Cloud
    "metadata.goog",  # Google Cloud
    "metadata",  # Google Cloud, the short name inside a VM
    "instance-data",  # AWS EC2
    "instance-data.ec2.internal",  # AWS EC2
    "metadata.tencentyun.com",  # Tencent Cloud
})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # IPv4 addresses reached through NAT64
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")  # after httpx's IDNA encoding, names are ASCII
_EXAMPLE = "e.g. https://api.example.com"


def check_vendor_url(value: str, *, allow_private: bool = False) -> str:
    """Check a vendor API's root URL and return it without surrounding white space.

    Args:
        value: the URL as configured.
        allow_private: also accept link-local and cloud metadata addresses.

    Raises:
        ValueError: the URL is not http(s) with a host, or (unless `allow_private`) it points at
            a link-local address or a cloud metadata service. The message names the host, never
            the rest of the URL (which may hold credentials).
    """
    import httpx  # here: a config without a vendor URL (`status` on `sql` apps) never loads it

    text = value.strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise ValueError(f"not a URL; write the API's http(s) root, {_EXAMPLE}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an http(s) URL with a host, {_EXAMPLE}")
    host = url.host.lower().rstrip(".")
    address = _address_of(host)
    if address is None and not _HOST_NAME.fullmatch(host):
        raise ValueError(f"the host is not a valid name or address, {_EXAMPLE}")
    if allow_private:
        return text
    if address is not None and _is_metadata_address(address):
        raise ValueError(
            f"{address} is a link-local or cloud metadata address, where a cloud machine serves "
            "its own credentials; set allow_private_urls = true on the app if you mean it"
        )
    if host in _METADATA_NAMES:
        raise ValueError(
            f"{host} is a cloud metadata service, where a cloud machine serves its own "
            "credentials; set allow_private_urls = true on the app if you mean it"
        )
    return text


def _address_of(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address a host names literally, including the legacy IPv4 forms that resolvers
    still accept (`2852039166`, `0xa9fea9fe`, `169.254.43518`); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fx.]+", host) or not host[:1].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_metadata_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _is_metadata_address(address.ipv4_mapped)
        if address in _NAT64:
            return _is_metadata_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address in _METADATA_ADDRESSES or any(address in net for net in _LINK_LOCAL)


def _vendor_url(value: str, info: ValidationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return check_vendor_url(value, allow_private=bool(context.get(ALLOW_PRIVATE_URLS, False)))


VendorUrl = Annotated[str, AfterValidator(_vendor_url)]
"""A vendor API's root URL: http(s) with a host, and no link-local or metadata address unless the
app sets `allow_private_urls = true`. Use it for a settings model's `base_url`."""


def check_webhook_max_age(value: float) -> float:
    """Check how old (in seconds) a signed webhook delivery may be; return it unchanged.

    Raises:
        ValueError: it is more than `MAX_WEBHOOK_AGE_S`.
    """
    if value > MAX_WEBHOOK_AGE_S:
        raise ValueError(
            f"at most {MAX_WEBHOOK_AGE_S:g} s: a captured delivery can be replayed for as long as "
            "it is accepted (HubSpot's own SDK accepts 300 s)"
        )
    return value


WebhookMaxAge = Annotated[Seconds, Field(gt=0), AfterValidator(check_webhook_max_age)]
"""Seconds a signed webhook delivery stays acceptable: more than 0, at most `MAX_WEBHOOK_AGE_S`.
Use it for a settings model's `webhook_max_age_s`, with the vendor's advice as the default."""
