"""The Sandbox OAuth provider itself, driven over real HTTP by Authlib's own client, as the portal will
drive Google, Microsoft or Slack."""

from __future__ import annotations

import asyncio
import html
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.jwk import KeySet

if TYPE_CHECKING:
    from tests.oauth_sandbox import RunningSandbox

# The fixture module is loaded as a plugin, not imported here, so pytest can still rewrite its asserts.
pytest_plugins = ["tests.oauth_sandbox"]

ROOT = Path(__file__).resolve().parents[1]
REDIRECT_URI = "http://127.0.0.1:8000/oauth/sandbox/callback"  # never contacted: the Location is read
SCOPE = "openid email profile offline_access read"
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


def oauth_client(sandbox: RunningSandbox, **options) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        **options,
    )


async def consent(sandbox: RunningSandbox, authorization_url: str, decision: str = "allow") -> dict[str, str]:
    """Open the consent page, press a button, and return the query of the redirect back to the client."""
    async with httpx.AsyncClient() as browser:
        page = await browser.get(authorization_url)
        assert page.status_code == 200, page.text
        assert "InTime (dev)" in page.text
        fields = {html.unescape(name): html.unescape(value) for name, value in HIDDEN_INPUT.findall(page.text)}
        answer = await browser.post(f"{sandbox.url}/authorize", data=fields | {"decision": decision})
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


async def sign_in(sandbox: RunningSandbox, client: AsyncOAuth2Client, nonce: str | None = None) -> dict:
    """The whole code flow with PKCE: authorize, allow, exchange the code. Returns the token response."""
    verifier = generate_token(48)
    url, state = client.create_authorization_url(f"{sandbox.url}/authorize", code_verifier=verifier, nonce=nonce)
    callback = await consent(sandbox, url)
    assert callback["state"] == state
    return await client.fetch_token(f"{sandbox.url}/token", code=callback["code"], code_verifier=verifier)


async def api_me(sandbox: RunningSandbox, access_token: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(f"{sandbox.url}/api/me", headers={"authorization": f"Bearer {access_token}"})


async def refresh(sandbox: RunningSandbox, refresh_token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{sandbox.url}/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            auth=(sandbox.client_id, sandbox.client_secret),
        )


async def test_discovery_lists_every_endpoint_and_is_valid_openid_metadata(sandbox_server):
    async with httpx.AsyncClient() as http:
        document = (await http.get(sandbox_server.metadata_url)).json()

    OpenIDProviderMetadata(document).validate()
    base = sandbox_server.url
    assert document["issuer"] == base
    assert document["authorization_endpoint"] == f"{base}/authorize"
    assert document["token_endpoint"] == f"{base}/token"
    assert document["revocation_endpoint"] == f"{base}/revoke"
    assert document["userinfo_endpoint"] == f"{base}/userinfo"
    assert document["jwks_uri"] == f"{base}/jwks"
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert set(document["scopes_supported"]) >= {"openid", "email", "profile", "offline_access", "read", "write"}


async def test_code_flow_with_pkce_gives_tokens_and_an_id_token_signed_for_the_nonce(sandbox_server):
    # Given a client that asks for openid with a nonce
    nonce = generate_token(20)
    async with oauth_client(sandbox_server) as client:
        # When the user allows and the client exchanges the code
        token = await sign_in(sandbox_server, client, nonce=nonce)

    # Then it holds an access token for the configured lifetime, a refresh token and an id_token
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 120
    assert token["refresh_token"]
    assert set(token["scope"].split()) == set(SCOPE.split())
    # ... whose signature verifies against /jwks and whose claims name this issuer, client and nonce
    async with httpx.AsyncClient() as http:
        keys = KeySet.import_key_set((await http.get(f"{sandbox_server.url}/jwks")).json())
        userinfo = await http.get(
            f"{sandbox_server.url}/userinfo", headers={"authorization": f"Bearer {token['access_token']}"}
        )
    decoded = jwt.decode(token["id_token"], keys, algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"] == keys.keys[0].kid
    claims = CodeIDToken(
        decoded.claims,
        decoded.header,
        options={"iss": {"essential": True, "value": sandbox_server.url}, "aud": {"value": sandbox_server.client_id}},
        params={"nonce": nonce, "access_token": token["access_token"]},
    )
    claims.validate()
    assert claims["nonce"] == nonce
    assert claims["sub"] == "sandbox-user-1" and claims["email"] == "ada@sandbox.test"
    # ... and the token opens /userinfo and the provider's API
    assert userinfo.json() == {"sub": "sandbox-user-1", "email": "ada@sandbox.test", "name": "Ada Sandbox"}
    assert (await api_me(sandbox_server, token["access_token"])).status_code == 200
    stats = await sandbox_server.stats()
    assert stats["authorization_codes_issued"] == 1 and stats["token_requests"] == 1
    assert stats["active_access_tokens"] == 1


async def test_a_code_is_refused_with_the_wrong_verifier_and_cannot_be_used_twice(sandbox_server):
    async with oauth_client(sandbox_server) as client:
        verifier = generate_token(48)
        url, _ = client.create_authorization_url(f"{sandbox_server.url}/authorize", code_verifier=verifier)
        code = (await consent(sandbox_server, url))["code"]

        with pytest.raises(OAuthError) as refused:
            await client.fetch_token(f"{sandbox_server.url}/token", code=code, code_verifier=generate_token(48))
        assert refused.value.error == "invalid_grant"

        await client.fetch_token(f"{sandbox_server.url}/token", code=code, code_verifier=verifier)
        with pytest.raises(OAuthError) as reused:
            await client.fetch_token(f"{sandbox_server.url}/token", code=code, code_verifier=verifier)
        assert reused.value.error == "invalid_grant"


async def test_an_authorization_request_without_pkce_is_sent_back_with_invalid_request(sandbox_server):
    async with httpx.AsyncClient() as browser:
        params = {"response_type": "code", "client_id": sandbox_server.client_id, "redirect_uri": REDIRECT_URI}
        answer = await browser.get(f"{sandbox_server.url}/authorize", params=params | {"state": "s1"})
        plain = await browser.get(
            f"{sandbox_server.url}/authorize",
            params=params | {"code_challenge": generate_token(48), "code_challenge_method": "plain"},
        )

    for response in (answer, plain):
        assert response.status_code == 302
        assert parse_qs(urlsplit(response.headers["location"]).query)["error"] == ["invalid_request"]
    assert parse_qs(urlsplit(answer.headers["location"]).query)["state"] == ["s1"]


async def test_deny_redirects_with_access_denied_and_the_state(sandbox_server):
    async with oauth_client(sandbox_server) as client:
        url, state = client.create_authorization_url(
            f"{sandbox_server.url}/authorize", code_verifier=generate_token(48)
        )
        callback = await consent(sandbox_server, url, decision="deny")

    assert callback["error"] == "access_denied" and callback["state"] == state
    assert "code" not in callback
    assert (await sandbox_server.stats())["authorization_codes_issued"] == 0


async def test_a_consent_post_without_the_pages_csrf_token_is_refused(sandbox_server):
    # Given the consent page, opened in the developer's browser (which now holds the CSRF cookie)
    async with oauth_client(sandbox_server) as client:
        url, _ = client.create_authorization_url(f"{sandbox_server.url}/authorize", code_verifier=generate_token(48))
    async with httpx.AsyncClient() as browser, httpx.AsyncClient() as another_site:
        page = await browser.get(url)
        fields = {html.unescape(name): html.unescape(value) for name, value in HIDDEN_INPUT.findall(page.text)}
        assert fields["_csrf_token"]
        allow = fields | {"decision": "allow"}
        # When a form posts Allow without the page's token, or with a token but not the cookie
        # (another site can build the form, it cannot read the page or set the sandbox's cookie)
        without_token = await browser.post(
            f"{sandbox_server.url}/authorize", data={k: v for k, v in allow.items() if k != "_csrf_token"}
        )
        wrong_token = await browser.post(f"{sandbox_server.url}/authorize", data=allow | {"_csrf_token": "x" * 128})
        without_cookie = await another_site.post(f"{sandbox_server.url}/authorize", data=allow)
        # Then each is refused, nothing is redirected and no code is issued
        for answer in (without_token, wrong_token, without_cookie):
            assert answer.status_code == 403, answer.text
            assert "location" not in answer.headers
        assert (await sandbox_server.stats())["authorization_codes_issued"] == 0
        # And the page's own form still works
        granted = await browser.post(f"{sandbox_server.url}/authorize", data=allow)
    assert granted.status_code == 302 and "code=" in granted.headers["location"]


async def test_an_unknown_client_or_unregistered_redirect_uri_gets_an_error_page_never_a_redirect():
    from tests.oauth_sandbox import run_sandbox

    with run_sandbox(redirect_uris=[REDIRECT_URI], allow_loopback_redirects=False) as sandbox:
        challenge = {"code_challenge": generate_token(48), "code_challenge_method": "S256", "state": "s"}
        cases = [
            {"client_id": "nobody", "redirect_uri": REDIRECT_URI},
            {"client_id": sandbox.client_id, "redirect_uri": "https://attacker.example/callback"},
            {"client_id": sandbox.client_id, "redirect_uri": "http://127.0.0.1:9999/callback"},
        ]
        async with httpx.AsyncClient() as browser:
            answers = [
                await browser.get(f"{sandbox.url}/authorize", params={"response_type": "code"} | challenge | case)
                for case in cases
            ]
    with run_sandbox(allow_loopback_redirects=True) as sandbox:
        async with httpx.AsyncClient() as browser:
            lookalike = await browser.get(
                f"{sandbox.url}/authorize",
                params={"response_type": "code", "client_id": sandbox.client_id}
                | challenge
                | {"redirect_uri": "http://127.0.0.1.attacker.example/callback"},
            )

    for answer in [*answers, lookalike]:
        assert answer.status_code == 400
        assert "location" not in answer.headers
        assert answer.headers["content-type"].startswith("text/html")
        assert "invalid_" in answer.text


async def test_refresh_rotates_and_the_old_refresh_token_answers_invalid_grant(sandbox_server):
    async with oauth_client(sandbox_server, token_endpoint_auth_method="client_secret_post") as client:
        first = dict(await sign_in(sandbox_server, client))
        second = dict(await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=first["refresh_token"]))

        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        with pytest.raises(OAuthError) as reused:
            await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=first["refresh_token"])
        assert reused.value.error == "invalid_grant"
        # The new refresh token works, and access tokens already issued stay valid until they expire.
        await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=second["refresh_token"])
    assert (await api_me(sandbox_server, first["access_token"])).status_code == 200
    assert (await sandbox_server.stats())["refresh_requests"] == 3


async def test_without_rotation_the_refresh_token_stays_usable(sandbox_server):
    await sandbox_server.control(refresh_rotation=False)
    async with oauth_client(sandbox_server) as client:
        token = dict(await sign_in(sandbox_server, client))
    for _ in range(2):
        answer = await refresh(sandbox_server, token["refresh_token"])
        assert answer.status_code == 200 and "refresh_token" not in answer.json()


async def test_two_concurrent_refreshes_with_one_token_are_both_counted_and_exactly_one_wins(sandbox_server):
    async with oauth_client(sandbox_server) as client:
        token = await sign_in(sandbox_server, client)
    await sandbox_server.control(token_mode="slow")

    # When two refreshers race with the same refresh token against a slow provider
    racers = [asyncio.create_task(refresh(sandbox_server, token["refresh_token"])) for _ in range(2)]
    await asyncio.sleep(0.5)
    # Then both are counted while still waiting, and once answered exactly one got a new token
    assert (await sandbox_server.stats())["refresh_requests"] == 2
    statuses = sorted(answer.status_code for answer in await asyncio.gather(*racers))
    assert statuses == [200, 400]


async def test_revoking_the_access_token_makes_the_api_answer_401(sandbox_server):
    async with oauth_client(sandbox_server, revocation_endpoint_auth_method="client_secret_post") as client:
        token = dict(await sign_in(sandbox_server, client))
        assert (await api_me(sandbox_server, token["access_token"])).status_code == 200

        revoked = await client.revoke_token(
            f"{sandbox_server.url}/revoke", token=token["access_token"], token_type_hint="access_token"
        )
        assert revoked.status_code == 200

        denied = await api_me(sandbox_server, token["access_token"])
        assert denied.status_code == 401
        assert 'error="invalid_token"' in denied.headers["www-authenticate"]
        # Revoking the refresh token ends the grant: refreshing is refused.
        await client.revoke_token(f"{sandbox_server.url}/revoke", token=token["refresh_token"])
    assert (await refresh(sandbox_server, token["refresh_token"])).json()["error"] == "invalid_grant"
    stats = await sandbox_server.stats()
    assert stats["revocations"] == 2 and stats["active_access_tokens"] == 0


async def test_control_switches_make_refreshes_fail_on_demand(sandbox_server):
    async with oauth_client(sandbox_server) as client:
        token = dict(await sign_in(sandbox_server, client))

        await sandbox_server.control(token_mode="invalid_grant")
        with pytest.raises(OAuthError) as rejected:
            await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=token["refresh_token"])
        assert rejected.value.error == "invalid_grant"

        await sandbox_server.control(token_mode="error_500")
        with pytest.raises(httpx.HTTPStatusError) as failed:
            await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=token["refresh_token"])
        assert failed.value.response.status_code == 500

        # Back to normal: the refresh token was never consumed by the simulated failures.
        await sandbox_server.control(token_mode="ok")
        refreshed = await client.refresh_token(f"{sandbox_server.url}/token", refresh_token=token["refresh_token"])
    assert refreshed["access_token"] != token["access_token"]
    assert (await sandbox_server.stats())["refresh_requests"] == 3


async def test_control_rejects_unknown_switches_and_bad_values(sandbox_server):
    async with httpx.AsyncClient() as http:
        for body in ({"token_mode": "broken"}, {"access_token_ttl": 0}, {"refresh_rotation": "yes"}, {"colour": 1}):
            assert (await http.post(f"{sandbox_server.url}/_control", json=body)).status_code == 400
    assert (await sandbox_server.control())["token_mode"] == "ok"


async def test_an_expired_access_token_gets_401_with_www_authenticate(sandbox_server):
    await sandbox_server.control(access_token_ttl=1)
    async with oauth_client(sandbox_server) as client:
        token = dict(await sign_in(sandbox_server, client))
    assert token["expires_in"] == 1
    assert (await api_me(sandbox_server, token["access_token"])).status_code == 200

    await asyncio.sleep(1.5)

    expired = await api_me(sandbox_server, token["access_token"])
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"].lower().startswith("bearer ")
    async with httpx.AsyncClient() as http:
        missing = await http.get(f"{sandbox_server.url}/userinfo")
    assert missing.status_code == 401 and "www-authenticate" in missing.headers
    assert (await sandbox_server.stats())["active_access_tokens"] == 0


def test_the_command_line_serves_the_sandbox_on_the_given_port():
    with socket.socket() as probe:  # a port that is free right now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "devtools.sandbox", "--port", str(port), "--redirect-uri", REDIRECT_URI]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                document = httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration").json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        assert document["issuer"] == f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
