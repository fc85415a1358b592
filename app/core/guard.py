"""The SSRF guard: which URLs and addresses outbound requests may use.

Webhook URLs are typed by tenants, so every request we send on their behalf could be aimed at our own
network: the cloud metadata service (169.254.169.254), Redis on localhost, an admin panel on 10.x.
Checking the URL when it is saved is not enough, because DNS answers change: a name that resolved to a
public address at save time can resolve to 127.0.0.1 at send time (DNS rebinding). So the guard runs
twice: `check_url` when a webhook is saved (a clear error beside the form field), and again inside the
client's connector on every new connection (app.core.outbound), which then connects to the very
address it checked, never to a second lookup of the name. TLS still verifies the certificate against
the host name.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable
from urllib.parse import SplitResult, urlsplit

from app.core.settings import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 10.0
"""Seconds `check_url` waits for DNS; a form should not hang on a resolver that never answers."""

# Listed explicitly, not left to `is_private` / `is_global` alone: the stdlib's tables change between
# Python releases, and 100.64.0.0/10 (carrier-grade NAT) counts as neither private nor global.
_REFUSED_NETWORKS = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "a 'this network' address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("255.255.255.255/32", "the broadcast address"),
        ("fc00::/7", "a unique-local IPv6 address"),
        ("fec0::/10", "a site-local IPv6 address"),
        ("2001::/32", "a Teredo tunnel address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HOST_LABELS = re.compile(r"(?:[\w-]+\.)*[\w-]+\.?")  # \w admits IDN letters; DNS judges the rest


class OutboundRefused(ValueError):
    """A URL or address that outbound requests may not use; the message is shown to the user as is."""


def parse_target(url: str) -> SplitResult:
    """Check a URL's shape and return it normalised: lower-case scheme and host, no fragment.

    Whitespace and control characters are refused rather than cleaned, because urlsplit silently drops
    tabs and newlines, so what we would check is not what the user typed. Credentials are refused because
    the URL is stored and shown in clear text; secrets belong in headers.
    """
    if len(url) > MAX_URL_LENGTH:
        raise OutboundRefused(f"The URL is too long: at most {MAX_URL_LENGTH} characters are allowed.")
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        raise OutboundRefused("The URL contains spaces or control characters; remove them (write a space as %20).")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise OutboundRefused("This is not a valid URL; it should look like https://example.com/webhook.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise OutboundRefused("The URL must start with https:// or http://.")
    if "@" in parts.netloc:
        raise OutboundRefused("The URL must not contain a user name or password; send credentials in a header instead.")
    host = parts.hostname
    if not host:
        raise OutboundRefused("The URL has no host name; it should look like https://example.com/webhook.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise OutboundRefused("The URL's port must be a number from 1 to 65535.")
    if _literal(host) is None and ("%" in host or ":" in host or not _HOST_LABELS.fullmatch(host)):
        raise OutboundRefused("The URL's host name contains characters that are not allowed in a host name.")
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{port}" if port is not None else ""
    return SplitResult(parts.scheme.lower(), netloc, parts.path or "/", parts.query, "")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv6 transition form: the kernel or a gateway would really connect there."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refusal(ip: IPAddress) -> str | None:
    """Why an address may not be reached (a phrase for the user's message), or None if it is public."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return _refusal(embedded)
    for network, reason in _REFUSED_NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    for flag, reason in (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    ):
        if flag:
            return reason
    return None


def address_allowed(ip: IPAddress, allow: Iterable[Network]) -> bool:
    """True if the address is public, or lies in one of the `allow` networks (INTIME_OUTBOUND_ALLOW)."""
    candidates = [ip, _embedded_ipv4(ip)]
    for network in allow:
        if any(c is not None and c.version == network.version and c in network for c in candidates):
            return True
    return _refusal(ip) is None


async def checked_addresses(host: str, port: int, allow: Iterable[Network]) -> list[IPAddress]:
    """Resolve and check; raises socket.gaierror when DNS fails (a network error to retry at send time).

    Every answer must pass, not just one: an attacker's DNS can return a public and a private address
    together and hope the connection lands on the private one.
    """
    allow = tuple(allow)
    literal = _literal(host)
    if literal is not None:
        refusal = literal_refusal(host, allow)
        if refusal:
            raise OutboundRefused(refusal)
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}") from exc
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    for ip in addresses:
        if not address_allowed(ip, allow):
            raise OutboundRefused(
                f"{host} resolves to {ip}, which is {_refusal(ip)}; "
                "outbound requests may only go to public internet addresses."
            )
    return addresses


@functools.lru_cache(maxsize=4096)
def literal_refusal(host: str, allow: tuple[Network, ...]) -> str:
    """Why a literal address in a URL may not be reached ("" if it may, or if `host` is a name); the
    verdict never changes for an allow-list, so it is kept."""
    ip = _literal(host)
    if ip is None or address_allowed(ip, allow):
        return ""
    return f"{ip} is {_refusal(ip)}; outbound requests may only go to public internet addresses."


async def resolve_checked(host: str, port: int, allow: Iterable[Network] | None = None) -> list[str]:
    """Resolve `host` and return its addresses if every one of them may be reached; else OutboundRefused."""
    allow = get_settings().outbound.allow if allow is None else allow
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            return [str(ip) for ip in await checked_addresses(host, port, allow)]
    except (OSError, TimeoutError):
        raise OutboundRefused(f"Could not resolve {host}: the name has no DNS address (check it for typos).") from None


async def check_url(url: str, allow: Iterable[Network] | None = None) -> str:
    """The save-time check of a webhook or health-check URL: shape, then every resolved address."""
    parts = parse_target(url)
    assert parts.hostname is not None
    await resolve_checked(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow)
    return parts.geturl()
