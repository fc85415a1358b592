"""The SSRF guard and the shared outbound client.

Address checks are pure function calls: no test opens a connection to anything but 127.0.0.1 / ::1.
The client is exercised against real HTTP(S) receivers started here on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.core import outbound
from app.core.guard import OutboundRefused, address_allowed, check_url, parse_target, resolve_checked
from app.core.outbound import classify_error, make_client

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
BODY = b'{"id": "evt_1", "type": "job.created", "data": {"job": 42}}'


# --- parse_target: one refusal per reason, each with the sentence the user sees ----------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/" + "a" * 2048, "The URL is too long: at most 2048 characters"),
        ("https://example.com/a b", "contains spaces or control characters"),
        ("https://example.com/\x00", "contains spaces or control characters"),
        ("https://exa\tmple.com/", "contains spaces or control characters"),
        ("http://[::1/hook", "This is not a valid URL"),
        ("ftp://example.com/hook", "must start with https:// or http://"),
        ("example.com/hook", "must start with https:// or http://"),
        ("javascript:alert(1)", "must start with https:// or http://"),
        ("https://user:pass@example.com/hook", "must not contain a user name or password"),
        ("https://token@example.com/hook", "must not contain a user name or password"),
        ("https:///hook", "has no host name"),
        ("https://example.com:99999/hook", "port must be a number from 1 to 65535"),
        ("https://example.com:http/hook", "port must be a number from 1 to 65535"),
        ("https://example.com:0/hook", "port must be a number from 1 to 65535"),
        ("https://exa$mple.com/hook", "host name contains characters that are not allowed"),
    ],
)
def test_parse_target_refuses_with_a_sentence_naming_the_problem(url, message):
    with pytest.raises(OutboundRefused, match=message):
        parse_target(url)


def test_parse_target_normalises_scheme_and_host_and_drops_the_fragment():
    assert parse_target("HTTPS://Hooks.Example.COM:8443/In/Box?a=1#top").geturl() == (
        "https://hooks.example.com:8443/In/Box?a=1"
    )
    assert parse_target("http://[2001:DB8::1]").geturl() == "http://[2001:db8::1]/"


# --- address_allowed: given addresses, no connections -------------------------------------------------

REFUSED = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "127.0.0.1",
    "0.0.0.0",  # noqa: S104  (an address under test, not a bind)
    "0.1.2.3",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local
    "ff02::1",
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    assert not address_allowed(ipaddress.ip_address(address), ())


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_allowed(ipaddress.ip_address(address), ())


def test_the_allow_list_lets_chosen_private_networks_through_and_nothing_else():
    allow = (ipaddress.ip_network("10.20.0.0/16"),)
    assert address_allowed(ipaddress.ip_address("10.20.3.4"), allow)
    assert address_allowed(ipaddress.ip_address("::ffff:10.20.3.4"), allow)
    assert not address_allowed(ipaddress.ip_address("10.21.0.1"), allow)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)


# --- resolve_checked / check_url ----------------------------------------------------------------------


async def test_literal_addresses_are_checked_without_dns():
    assert await resolve_checked("93.184.216.34", 443, allow=()) == ["93.184.216.34"]
    with pytest.raises(OutboundRefused, match=r"169\.254\.169\.254 is a link-local address"):
        await resolve_checked("169.254.169.254", 80, allow=())


async def test_localhost_resolves_only_when_loopback_is_allowed():
    assert "127.0.0.1" in await resolve_checked("localhost", 80, allow=LOOPBACK)
    with pytest.raises(OutboundRefused, match=r"localhost resolves to .*loopback address"):
        await resolve_checked("localhost", 80, allow=())


async def test_a_dns_answer_mixing_public_and_private_addresses_is_refused(monkeypatch):
    loop = asyncio.get_running_loop()

    async def two_answers(host, port, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", two_answers)
    with pytest.raises(OutboundRefused, match=r"rebind\.example resolves to 10\.0\.0\.7, which is a private address"):
        await resolve_checked("rebind.example", 443, allow=())


async def test_an_unresolvable_name_is_refused_with_a_clear_message():
    with pytest.raises(OutboundRefused, match=r"Could not resolve no-such-host\.invalid"):
        await resolve_checked("no-such-host.invalid", 443, allow=())


async def test_check_url_returns_the_normalised_url_or_refuses():
    assert await check_url("HTTP://LocalHost:8080/hook#x", allow=LOOPBACK) == "http://localhost:8080/hook"
    with pytest.raises(OutboundRefused, match=r"10\.1\.2\.3 is a private address"):
        await check_url("https://10.1.2.3/hook", allow=LOOPBACK)


async def test_without_an_explicit_allow_list_the_settings_apply():
    # the test settings allow loopback, as `./task dev` does
    assert await resolve_checked("127.0.0.1", 80) == ["127.0.0.1"]
    with pytest.raises(OutboundRefused):
        await resolve_checked("192.168.0.10", 80)


# --- the client against real local receivers ----------------------------------------------------------


@dataclass
class Receiver:
    url: str
    requests: list[web.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)


async def _serve(ssl_context: ssl.SSLContext | None = None) -> tuple[Receiver, web.AppRunner]:
    async def record(request: web.Request) -> web.StreamResponse:
        receiver.requests.append(request)
        receiver.bodies.append(await request.read())
        if request.path == "/redirect":
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        if request.path == "/set-cookie":
            return web.Response(text="thanks", headers={"Set-Cookie": "session=receiver-a; Path=/"})
        if request.path == "/slow":
            await asyncio.sleep(5)
        if request.path == "/gzip-and-links":  # a compressed answer and a header given twice
            answer = web.Response(body=gzip.compress(b"a" * 5000), headers={"Content-Encoding": "gzip"})
            answer.headers.add("Link", "<https://example.test/1>; rel=next")
            answer.headers.add("Link", "<https://example.test/9>; rel=last")
            return answer
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver = Receiver(url=f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}")
    return receiver, runner


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    instance, runner = await _serve()
    yield instance
    await runner.cleanup()


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[object]]]:
    """A bare TCP listener on 127.0.0.1 that records every connection it accepts."""
    accepted: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], accepted
    server.close()
    await server.wait_closed()


async def test_a_post_arrives_with_its_body_and_headers(receiver):
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "InTime-Webhooks/0.1.0",
        "X-InTime-Event": "job.created",
    }
    async with make_client(allow=LOOPBACK) as client:
        response = await client.post(f"{receiver.url}/hook?x=1", content=BODY, headers=headers, timeout=5)
    assert (response.status_code, response.text) == (200, "thanks")
    [request] = receiver.requests
    assert (request.method, request.path_qs) == ("POST", "/hook?x=1")
    assert receiver.bodies == [BODY]
    assert request.headers["X-InTime-Event"] == "job.created"
    assert request.headers["User-Agent"] == "InTime-Webhooks/0.1.0"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers.getall("Host") == [receiver.url.removeprefix("http://")]


async def test_a_host_name_is_resolved_checked_and_connected(receiver):
    url = receiver.url.replace("127.0.0.1", "localhost")
    async with make_client(allow=LOOPBACK) as client:
        response = await client.post(f"{url}/by-name", content=BODY, timeout=5)
    assert response.status_code == 200
    assert [r.path for r in receiver.requests] == ["/by-name"]


async def test_a_redirect_is_returned_not_followed(receiver):
    async with make_client(allow=LOOPBACK) as client:
        response = await client.post(f"{receiver.url}/redirect", content=BODY, timeout=5)
    assert response.status_code == 302
    assert response.headers["Location"] == "/elsewhere"
    assert [r.path for r in receiver.requests] == ["/redirect"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_refused_address_is_never_connected_to(listener, host):
    port, accepted = listener
    async with make_client(allow=()) as client:
        with pytest.raises(OutboundRefused, match="loopback address") as caught:
            await client.post(f"http://{host}:{port}/hook", content=BODY, timeout=5)
    assert classify_error(caught.value) == "refused_by_guard"
    await asyncio.sleep(0.05)
    assert accepted == []


async def test_a_receiver_slower_than_the_timeout_is_a_timeout(receiver):
    async with make_client(allow=LOOPBACK) as client:
        with pytest.raises(httpx.TimeoutException) as caught:
            await client.post(f"{receiver.url}/slow", content=BODY, timeout=0.3)
    assert classify_error(caught.value) == "timeout"


async def test_a_closed_port_is_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(allow=LOOPBACK) as client:
        with pytest.raises(httpx.ConnectError) as caught:  # not mislabelled as a timeout
            await client.post(f"http://127.0.0.1:{port}/hook", content=BODY, timeout=5)
    assert classify_error(caught.value) == "connection_refused"


async def test_the_shared_client_is_reused_until_closed(receiver):
    client = outbound.shared_client()
    assert outbound.shared_client() is client
    assert (await client.post(f"{receiver.url}/shared", content=BODY)).status_code == 200
    await outbound.close_shared_client()
    assert client.is_closed
    assert outbound.shared_client() is not client
    await outbound.close_shared_client()


async def test_the_delivery_path_keeps_no_cookies_between_deliveries(receiver):
    """Every webhook of every organisation shares one pool: a cookie one receiver sets must not come
    back on a later delivery (nor reach another receiver on the same host). By host name: cookie jars
    ignore cookies from bare IP addresses anyway."""
    url = receiver.url.replace("127.0.0.1", "localhost")
    try:
        first = await outbound.post(f"{url}/set-cookie", BODY, {"X-Test": "1"}, timeout_seconds=5, body_cap=1024)
        assert first.headers["set-cookie"].startswith("session=")
        second = await outbound.post(f"{url}/later", BODY, {}, timeout_seconds=5, body_cap=1024)
        assert (second.status, second.body, second.truncated) == (200, b"thanks", False)
    finally:
        await outbound.close_shared_client()
    assert [r.path for r in receiver.requests] == ["/set-cookie", "/later"]
    assert receiver.requests[0].headers["X-Test"] == "1"
    assert "Cookie" not in receiver.requests[1].headers


async def test_the_delivery_path_keeps_the_answer_decoded_capped_and_with_every_header_value(receiver):
    try:
        whole = await outbound.post(f"{receiver.url}/gzip-and-links", BODY, {}, timeout_seconds=5, body_cap=10_000)
        capped = await outbound.post(f"{receiver.url}/gzip-and-links", BODY, {}, timeout_seconds=5, body_cap=1000)
    finally:
        await outbound.close_shared_client()
    assert (whole.body, whole.truncated) == (b"a" * 5000, False)
    assert (capped.body, capped.truncated) == (b"a" * 1000, True)
    assert whole.headers["link"] == "<https://example.test/1>; rel=next, <https://example.test/9>; rel=last"
    assert whole.headers["content-encoding"] == "gzip"


async def test_the_delivery_path_is_guarded_too(listener, monkeypatch):
    from dataclasses import replace

    from app.core.settings import get_settings

    strict = replace(get_settings(), outbound=replace(get_settings().outbound, allow=()))
    monkeypatch.setattr(outbound, "get_settings", lambda: strict)
    port, accepted = listener
    try:
        for host in ("localhost", "127.0.0.1", "[::ffff:127.0.0.1]"):  # by name, and literals aiohttp never resolves
            with pytest.raises(OutboundRefused, match="loopback address"):
                await outbound.post(f"http://{host}:{port}/hook", BODY, {}, timeout_seconds=5, body_cap=1024)
    finally:
        await outbound.close_shared_client()
    await asyncio.sleep(0.05)
    assert accepted == []


# --- TLS: certificates are checked against the URL's host name, not the address connected to ----------


def _certificate_for_localhost(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_checks_the_certificate_against_the_host_name(tmp_path):
    cert_path, key_path = _certificate_for_localhost(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)
    receiver, runner = await _serve(server_context)
    server_context.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)  # type: ignore[func-returns-value]
    trusting = ssl.create_default_context(cafile=str(cert_path))
    by_name = receiver.url.replace("127.0.0.1", "localhost")
    try:
        async with make_client(allow=LOOPBACK, verify=trusting) as client:
            assert (await client.post(f"{by_name}/tls", content=BODY, timeout=5)).status_code == 200
            with pytest.raises(httpx.TransportError) as wrong_name:
                await client.post(f"{receiver.url}/tls", content=BODY, timeout=5)
        async with make_client(allow=LOOPBACK) as untrusting:
            with pytest.raises(httpx.TransportError) as unknown_issuer:
                await untrusting.post(f"{by_name}/tls", content=BODY, timeout=5)
    finally:
        await runner.cleanup()
    assert receiver.server_names[0] == "localhost"  # SNI carried the name although we dialled an address
    assert classify_error(wrong_name.value) == "tls"
    assert classify_error(unknown_issuer.value) == "tls"
    assert [r.path for r in receiver.requests] == ["/tls"]
