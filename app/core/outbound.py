"""Outbound HTTP: the SSRF guard and the one pooled client that webhook delivery and health checks share.

Webhook URLs are typed by tenants, so every request we send on their behalf could be aimed at our own
network: the cloud metadata service (169.254.169.254), Redis on localhost, an admin panel on 10.x.
Checking the URL when it is saved is not enough, because DNS answers change: a name that resolved to a
public address at save time can resolve to 127.0.0.1 at send time (DNS rebinding). So the guard runs
twice: `check_url` when a webhook is saved (a clear error beside the form field), and again inside the
client's connector on every new connection, which then connects to the very address it checked, never
to a second lookup of the name. TLS still verifies the certificate against the host name.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import re
import socket
import ssl
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

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


async def _checked_addresses(host: str, port: int, allow: Iterable[Network]) -> list[IPAddress]:
    """Resolve and check; raises socket.gaierror when DNS fails (a network error to retry at send time).

    Every answer must pass, not just one: an attacker's DNS can return a public and a private address
    together and hope the connection lands on the private one.
    """
    allow = tuple(allow)
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}") from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
    for ip in addresses:
        if not address_allowed(ip, allow):
            where = str(ip) if literal is not None else f"{host} resolves to {ip}, which"
            raise OutboundRefused(
                f"{where} is {_refusal(ip)}; outbound requests may only go to public internet addresses."
            )
    return addresses


async def resolve_checked(host: str, port: int, allow: Iterable[Network] | None = None) -> list[str]:
    """Resolve `host` and return its addresses if every one of them may be reached; else OutboundRefused."""
    allow = get_settings().outbound.allow if allow is None else allow
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            return [str(ip) for ip in await _checked_addresses(host, port, allow)]
    except (OSError, TimeoutError):
        raise OutboundRefused(f"Could not resolve {host}: the name has no DNS address (check it for typos).") from None


async def check_url(url: str, allow: Iterable[Network] | None = None) -> str:
    """The save-time check of a webhook or health-check URL: shape, then every resolved address."""
    parts = parse_target(url)
    assert parts.hostname is not None
    await resolve_checked(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allow)
    return parts.geturl()


class _GuardedResolver(AbstractResolver):
    """aiohttp's DNS hook: every address it hands the connector has passed the guard.

    aiohttp connects to exactly the addresses a resolver returns (and caches them for a few seconds),
    so no second, unchecked lookup can happen between the check and the connect.
    """

    def __init__(self, allow: tuple[Network, ...]) -> None:
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = await _checked_addresses(host, port, self._allow)
        families = [(ip, socket.AF_INET6 if ip.version == 6 else socket.AF_INET) for ip in addresses]
        numeric = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [
            ResolveResult(hostname=host, host=str(ip), port=port, family=fam, proto=0, flags=numeric)
            for ip, fam in families
            if family in (0, fam)
        ]

    async def close(self) -> None:
        pass


class _GuardedTransport(AiohttpTransport):
    """httpx-aiohttp's transport on a connector whose resolver is the guard.

    aiohttp never asks the resolver about a literal IP in the URL, so those are checked here before
    the request is handed on. No proxy is ever used: environment proxies would bypass the guard.
    """

    def __init__(self, allow: tuple[Network, ...], max_connections: int, verify: ssl.SSLContext | None) -> None:
        limits = httpx.Limits(max_connections=max_connections, keepalive_expiry=30.0)
        super().__init__(verify=_system_ssl_context() if verify is None else verify, limits=limits)
        self._allow = allow

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(self._allow),
            limit=self.limits.max_connections or 100,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        # No cookie jar: the pool is shared by every webhook of every organisation, and a cookie one
        # receiver sets must never travel to another (or back to the same one on a later delivery).
        return aiohttp.ClientSession(connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar())

    def session(self) -> aiohttp.ClientSession:
        """The guarded aiohttp session under this transport (made on first use), for the delivery path."""
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client

    async def check_literal(self, host: str, port: int) -> None:
        """aiohttp never asks the resolver about a literal IP in a URL: such an address is checked here."""
        if _literal(host) is not None:
            await _checked_addresses(host, port, self._allow)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.check_literal(request.url.host, request.url.port or 0)
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            # httpx-aiohttp maps every aiohttp connection error to ConnectTimeout; restore the truth so
            # that callers catching httpx.TimeoutException do not mistake a refused connection for one.
            kind = classify_error(exc)
            if kind == "timeout":
                raise
            raise (httpx.ReadError if kind == "connection_reset" else httpx.ConnectError)(str(exc)) from exc.__cause__


@functools.cache
def _system_ssl_context() -> ssl.SSLContext:
    """The system's trusted certificates, read once per process (not once per transport: the OAuth code
    builds one per provider exchange) and shared; an SSLContext may serve many connections at once."""
    return httpx.create_ssl_context()


def make_transport(
    allow: Iterable[Network] | None = None, max_connections: int = 100, *, verify: ssl.SSLContext | None = None
) -> httpx.AsyncBaseTransport:
    """The guarded transport alone, for clients built elsewhere (Authlib's OAuth client is an httpx
    client: `AsyncOAuth2Client(transport=make_transport())`)."""
    return _GuardedTransport(tuple(get_settings().outbound.allow if allow is None else allow), max_connections, verify)


def make_client(
    allow: Iterable[Network] | None = None, max_connections: int = 100, *, verify: ssl.SSLContext | None = None
) -> httpx.AsyncClient:
    """A pooled client whose every connection goes through the guard; it follows no redirects.

    Pass the webhook's timeout per request (`client.post(url, ..., timeout=webhook.timeout_seconds)`):
    it bounds connecting and each read separately, so wrap the call in `asyncio.timeout` for a hard
    total. Record failures with `classify_error` rather than by httpx exception type: the type says
    less (and errors while reading a response body keep httpx-aiohttp's coarse mapping).
    The client belongs to the event loop that first uses it. `verify` replaces the system's trusted
    certificates (tests, private CAs); certificates are always checked, against the URL's host name.
    """
    allow = tuple(get_settings().outbound.allow if allow is None else allow)
    transport = _GuardedTransport(allow, max_connections, verify)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, timeout=10.0)


_shared: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None


def shared_client() -> httpx.AsyncClient:
    """The process's client (settings' allow-list), made on first use; one pool per worker process."""
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop or _shared[1].is_closed:
        _shared = (loop, make_client())
    return _shared[1]


@dataclass(frozen=True)
class Answer:
    """A receiver's answer as the delivery path keeps it: header names in lower case (a repeated header
    joined by ", "), the body decoded from its content-encoding and cut at the cap."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool


async def post(url: str, content: bytes, headers: dict[str, str], timeout_seconds: float, body_cap: int) -> Answer:
    """The delivery path: POST through the shared pool's guarded aiohttp session directly, read at most
    `body_cap` bytes of the answer. `timeout_seconds` bounds getting a connection, connecting, and each
    read separately (wrap the call in `asyncio.timeout` for a hard total); redirects are not followed.

    No httpx object is built on this path: its request and response models, header classes and URL
    parser above aiohttp measured at about a seventh of a busy worker's CPU. Errors are aiohttp's own
    (or OSError, TimeoutError, OutboundRefused): `classify_error` names them.
    """
    transport = shared_client()._transport
    assert isinstance(transport, _GuardedTransport)
    session = transport.session()
    target = yarl.URL(url)  # parsed once here, and aiohttp takes it as parsed
    await transport.check_literal(target.raw_host or "", target.port or 0)
    timeout = aiohttp.ClientTimeout(sock_connect=timeout_seconds, sock_read=timeout_seconds, connect=timeout_seconds)
    async with session.post(target, data=content, headers=headers, allow_redirects=False, timeout=timeout) as response:
        chunks, size, truncated = [], 0, False
        async for chunk in response.content.iter_chunked(16 * 1024):
            chunks.append(chunk)
            size += len(chunk)
            if size > body_cap:
                truncated = True
                break
        return Answer(response.status, _joined(response.raw_headers), b"".join(chunks)[:body_cap], truncated)


def _joined(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header pairs as one dict, decoded the way httpx decodes them (ASCII, else UTF-8, else Latin-1),
    names lower-cased and a repeated header's values joined by ", " (RFC 9110 5.3)."""
    pairs = list(raw)
    blob = b"".join(name + value for name, value in pairs)
    for encoding in ("ascii", "utf-8"):
        try:
            blob.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        encoding = "iso-8859-1"
    joined: dict[str, str] = {}
    for name, value in pairs:
        key, text = name.decode(encoding).lower(), value.decode(encoding)
        joined[key] = f"{joined[key]}, {text}" if key in joined else text
    return joined


async def request(
    method: str, url: str, content: bytes | None, headers: dict[str, str], timeout_seconds: float
) -> httpx.Response:
    """Any request the way `post` sends it: guarded, pooled, no cookies kept between callers (every
    organisation shares the pool). Read the body (`aread` or `aiter_bytes`), then `aclose`."""
    client = shared_client()
    outgoing = httpx.Request(
        method, url, content=content, headers=headers, extensions={"timeout": httpx.Timeout(timeout_seconds).as_dict()}
    )
    response = await client._transport.handle_async_request(outgoing)  # the client layer skipped: see post()
    response.request = outgoing
    return response


async def close_shared_client() -> None:
    """Close the process's client (worker shutdown), so its sockets close cleanly."""
    global _shared
    if _shared is not None:
        client, _shared = _shared[1], None
        await client.aclose()


_KINDS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (socket.gaierror, "dns"),  # before OSError: DNS errors are OSErrors too, and so are ssl errors
    ((ssl.SSLError, ssl.CertificateError, aiohttp.ClientSSLError), "tls"),
    (ConnectionRefusedError, "connection_refused"),
    (
        (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, aiohttp.ServerDisconnectedError),
        "connection_reset",
    ),
    ((TimeoutError, httpx.TimeoutException), "timeout"),  # aiohttp's timeouts are TimeoutErrors
    ((httpx.ProtocolError, httpx.DecodingError, aiohttp.ClientResponseError, aiohttp.ClientPayloadError), "protocol"),
)
_ERRNO_KINDS = {errno.ECONNREFUSED: "connection_refused", errno.ETIMEDOUT: "timeout"} | dict.fromkeys(
    (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED), "connection_reset"
)


def _kind(exc: BaseException) -> str | None:
    for types, kind in _KINDS:
        if isinstance(exc, types):
            return kind
    return _ERRNO_KINDS.get(exc.errno or 0) if isinstance(exc, OSError) else None


def classify_error(exc: BaseException) -> str:
    """One of: timeout, connection_refused, connection_reset, dns, tls, refused_by_guard, protocol, other.

    The cause chain is read from its root up, because the root (the OSError, the ssl error, the DNS
    error) says what happened, while the wrappers above it are sometimes mislabelled.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    if any(isinstance(e, OutboundRefused) for e in chain):
        return "refused_by_guard"
    for e in reversed(chain):
        kind = _kind(e)
        if kind is not None:
            return kind
    return "other"
