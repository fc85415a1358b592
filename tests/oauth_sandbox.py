"""The Sandbox OAuth provider (`devtools.sandbox`) for tests: served by uvicorn in a background thread
on a free 127.0.0.1 port, so the OAuth client under test talks to it over real HTTP.

    pytest_plugins = ["tests.oauth_sandbox"]  # makes the sandbox_server fixture available

    async def test_refresh_failure_is_shown(sandbox_server):
        await sandbox_server.control(token_mode="invalid_grant")
        ...
        assert (await sandbox_server.stats())["refresh_requests"] == 1

The fixture's client accepts any http://127.0.0.1 or http://localhost redirect URI, since the app under
test runs on a random port. For other settings (fixed redirect URIs, a token lifetime), use
`with run_sandbox(...) as sandbox:`.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from devtools.sandbox import Sandbox, SandboxConfig, create_app

START_TIMEOUT_SECONDS = 10.0


@dataclass
class RunningSandbox:
    url: str
    """Issuer base URL, e.g. http://127.0.0.1:41234 (endpoints: /authorize, /token, /revoke, ...)."""
    client_id: str
    client_secret: str
    state: Sandbox
    """The server's in-memory state (clients, codes, tokens, switches), for a test that must look inside."""

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    async def control(self, **switches: Any) -> dict[str, Any]:
        """Set switches: token_mode ("ok" | "invalid_grant" | "error_500" | "slow"), access_token_ttl
        (seconds, for tokens issued from now on), refresh_rotation (bool). Returns all switches."""
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{self.url}/_control", json=switches)
        response.raise_for_status()
        return response.json()

    async def stats(self) -> dict[str, int]:
        """authorization_codes_issued, token_requests, refresh_requests, revocations, active_access_tokens."""
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.url}/_stats")
        response.raise_for_status()
        return response.json()


@contextmanager
def run_sandbox(
    *,
    client_id: str = "intime-test",
    client_secret: str | None = None,
    redirect_uris: list[str] | None = None,
    allow_loopback_redirects: bool = True,
    access_token_ttl: int = 120,
    port: int = 0,
) -> Iterator[RunningSandbox]:
    """Start a sandbox (a fresh client secret unless given) and stop it on exit."""
    # Bound before the app is built, so the issuer in its id_tokens and discovery carries the real port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = SandboxConfig(
        client_id=client_id,
        client_secret=client_secret or secrets.token_urlsafe(24),
        redirect_uris=list(redirect_uris or []),
        issuer=url,
        access_token_ttl=access_token_ttl,
        allow_loopback_redirects=allow_loopback_redirects,
    )
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="oauth-sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OAuth sandbox did not start")
            time.sleep(0.005)
        yield RunningSandbox(url, config.client_id, config.client_secret, app.state.sandbox)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture
def sandbox_server() -> Iterator[RunningSandbox]:
    """A fresh Sandbox provider for this test (nothing shared: clients, tokens, switches, counters)."""
    with run_sandbox() as sandbox:
        yield sandbox
