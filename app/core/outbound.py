"""Outbound HTTP: the one pooled client that webhook delivery, health checks and provider calls share,
on a connector whose every connection passes the SSRF guard (app.core.guard): aiohttp connects to
exactly the addresses the guarded resolver checked, never to a second lookup of the name.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
import httpx
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from httpx_aiohttp import AiohttpTransport

from app.core.guard import Network, OutboundRefused, checked_addresses, literal_refusal
from app.core.settings import get_settings


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
        addresses = await checked_addresses(host, port, self._allow)
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
        refusal = literal_refusal(host, self._allow)
        if refusal:
            raise OutboundRefused(refusal)

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


def _shared_transport() -> _GuardedTransport:
    """The guarded transport under the process's client: both request paths go through its pool."""
    transport = shared_client()._transport
    assert isinstance(transport, _GuardedTransport)
    return transport


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
    transport = _shared_transport()
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
    """Any request through the same guarded pool as `post`, as an httpx response (health checks and
    provider calls): no cookies kept between callers (every organisation shares the pool). It hands
    the request straight to the transport: httpx's client layer above it (URL merging, cookies, auth
    and redirect machinery, none of which these want) measured at about half a busy worker's CPU per
    request. Read the body (`aread` or `aiter_bytes`), then `aclose`."""
    outgoing = httpx.Request(
        method, url, content=content, headers=headers, extensions={"timeout": httpx.Timeout(timeout_seconds).as_dict()}
    )
    response = await _shared_transport().handle_async_request(outgoing)
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
