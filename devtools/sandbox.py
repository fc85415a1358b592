"""Sandbox: a real OAuth 2.0 / OpenID Connect provider on 127.0.0.1, the dev and test stand-in for
Google, Microsoft and Slack.

Tests of the OAuth client drive it over real HTTP, and `./task dev` runs it on port 8002 as the
"sandbox" provider, so an admin can try connecting with no internet and no provider account:

    python -m devtools.sandbox --port 8002 --client-id intime-dev --client-secret sandbox-dev-secret \\
        --redirect-uri http://127.0.0.1:8000/oauth/sandbox/callback

It is Authlib's framework-agnostic server (`AuthorizationServer`) behind a small Litestar adapter:
the authorization code grant with PKCE required (S256 only, for every client, which is stricter than
Authlib's `CodeChallenge(required=True)`: that one only insists for public clients), an RS256
id_token carrying the request's `nonce` when `openid` is asked for, refresh tokens that rotate (a
used one answers `invalid_grant`, as Microsoft and Slack do), RFC 7009 revocation, `/userinfo`, and
`/api/me` as the provider's own API. One user, clients from the config, everything in memory.

Tests steer it through `POST /_control` (refreshes that fail or are slow, shorter token lifetimes,
rotation off) and read counters from `GET /_stats`. Keep it on loopback: the consent page signs
nobody in, because the only "user" is the developer at the keyboard. It does check a CSRF token
(Litestar's double-submit cookie), so another site open in the same browser cannot press Allow for
them: a forged consent would hand an attacker's client a code for the developer's sandbox account.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import html
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidRequestError,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
    grants,
    list_to_scope,
    scope_to_list,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, UserInfo
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc.jwk import KeySet, RSAKey
from litestar import Litestar, Request, Response, get, post, route
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.logging.config import LoggingConfig
from litestar.params import JSONBody
from litestar.template.base import csrf_token

SCOPES = ["openid", "email", "profile", "offline_access", "read", "write"]
TOKEN_MODES = ("ok", "invalid_grant", "error_500", "slow")
SLOW_SECONDS = 3.0
CODE_TTL_SECONDS = 600  # RFC 6749 §4.1.2: codes should live no longer than 10 minutes
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
LOOPBACK = ("127.0.0.1", "localhost")
USER = UserInfo(sub="sandbox-user-1", email="ada@sandbox.test", name="Ada Sandbox")
CSRF_FIELD = "_csrf_token"  # the form field Litestar's CSRF middleware reads
# Called by the client's back end, which authenticates itself (client secret, bearer token) and sends
# no cookie: only the consent form at /authorize is a browser's, so only it needs the CSRF check.
MACHINE_ROUTES = r"^/(token|revoke|userinfo|api/me|jwks|\.well-known/openid-configuration|_control|_stats)$"


@dataclass
class SandboxConfig:
    client_id: str
    """The one registered client's id."""
    client_secret: str
    """Its secret, checked by client_secret_basic and client_secret_post."""
    redirect_uris: list[str] = field(default_factory=list)
    """Registered redirect URIs; any other is refused with an error page, never redirected to."""
    issuer: str = "http://127.0.0.1:8002"
    """Base URL the server is reached at: the id_token `iss` and the prefix of every discovery URL."""
    access_token_ttl: int = 120
    """Seconds an access token lives (`expires_in`); short, so expiry is seen while trying things."""
    allow_loopback_redirects: bool = False
    """Also accept any http://127.0.0.1 or http://localhost redirect URI (tests run apps on random ports)."""
    client_name: str = "InTime (dev)"
    """Shown on the consent page."""


# --- in-memory models, shaped as Authlib's mixins expect ---------------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    name: str
    allow_loopback_redirects: bool

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return list_to_scope([s for s in scope_to_list(scope) or [] if s in SCOPES])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if redirect_uri in self.redirect_uris:
            return True
        # Compared by parsed host, not by prefix: "http://127.0.0.1.evil.test/" starts with "http://127.0.0.1".
        try:
            parts = urlsplit(redirect_uri)
            return self.allow_loopback_redirects and parts.scheme == "http" and parts.hostname in LOOPBACK
        except ValueError:
            return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    nonce: str | None
    code_challenge: str
    code_challenge_method: str
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


@dataclass
class Token(TokenMixin):
    client: Client
    scope: str
    access_token: str
    expires_in: int
    refresh_token: str | None
    issued_at: float = field(default_factory=time.time)
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> UserInfo:
        return USER

    def get_client(self) -> Client:
        return self.client


@dataclass
class Switches:
    token_mode: str = "ok"  # noqa: S105  (a mode, not a secret)
    access_token_ttl: int = 120
    refresh_rotation: bool = True

    def apply(self, changes: dict[str, Any]) -> None:
        if unknown := set(changes) - set(asdict(self)):
            raise ValueError(f"unknown switches: {', '.join(sorted(unknown))}")
        if "token_mode" in changes and changes["token_mode"] not in TOKEN_MODES:
            raise ValueError(f"token_mode must be one of {', '.join(TOKEN_MODES)}")
        ttl = changes.get("access_token_ttl", 1)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError("access_token_ttl must be a positive integer")
        if not isinstance(changes.get("refresh_rotation", True), bool):
            raise ValueError("refresh_rotation must be true or false")
        for name, value in changes.items():
            setattr(self, name, value)


@dataclass
class Stats:
    authorization_codes_issued: int = 0
    token_requests: int = 0
    refresh_requests: int = 0
    revocations: int = 0


# --- Authlib's grants and endpoints over that storage ----------------------------------------------------


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.server.sandbox.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            nonce=data.get("nonce"),
            code_challenge=data["code_challenge"],
            code_challenge_method=data["code_challenge_method"],
        )
        self.server.sandbox.stats.authorization_codes_issued += 1

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = self.server.sandbox.codes.get(code)
        if found and found.client_id == client.client_id and time.time() < found.auth_time + CODE_TTL_SECONDS:
            return found
        return None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.server.sandbox.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> UserInfo:
        return USER


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    @property
    def INCLUDE_NEW_REFRESH_TOKEN(self) -> bool:  # Authlib reads this class attribute; here a live switch
        return self.server.sandbox.switches.refresh_rotation

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = self.server.sandbox.by_refresh.get(refresh_token)
        return token if token and not token.refresh_revoked else None

    def authenticate_user(self, refresh_token: Token) -> UserInfo:
        return USER

    def revoke_old_credential(self, refresh_token: Token) -> None:
        if self.server.sandbox.switches.refresh_rotation:
            refresh_token.refresh_revoked = True


class PkceS256Required(CodeChallenge):
    """Every authorization request must carry an S256 challenge; Authlib would let a confidential client
    skip PKCE, and would accept "plain"."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: grants.AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: missing 'code_challenge'.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required with 'code_challenge_method=S256'.")
        super().validate_code_challenge(grant, redirect_uri)


class SandboxOpenIDCode(OpenIDCode):
    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(require_nonce=False)
        self.sandbox = sandbox

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return any(c.nonce == nonce for c in self.sandbox.codes.values())

    def resolve_client_private_key(self, client: Client) -> RSAKey:
        return self.sandbox.key

    def get_client_claims(self, client: Client) -> dict[str, Any]:
        return {"iss": self.sandbox.config.issuer, "aud": client.client_id}

    def get_encode_header(self, client: Client) -> dict[str, Any]:
        return {"alg": "RS256", "kid": self.sandbox.key.kid}

    def generate_user_info(self, user: UserInfo, scope: str) -> UserInfo:
        return user.filter(scope)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        sandbox = self.server.sandbox
        if token_type_hint == "refresh_token":  # noqa: S105  (a hint, not a secret)
            return sandbox.by_refresh.get(token_string)
        return sandbox.by_access.get(token_string) or sandbox.by_refresh.get(token_string)

    def revoke_token(self, token: Token, request: OAuth2Request) -> None:
        # Revoking a refresh token ends the grant (its access token too); an access token goes alone.
        token.access_revoked = True
        if request.form["token"] == token.refresh_token:
            token.refresh_revoked = True
        self.server.sandbox.stats.revocations += 1


class BearerValidator(BearerTokenValidator):
    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(realm="sandbox")
        self.sandbox = sandbox

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.sandbox.by_access.get(token_string)


# --- the Litestar adapter ------------------------------------------------------------------------------


class Payload(OAuth2Payload):
    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in items:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class SandboxRequest(OAuth2Request):
    """Authlib reads requests synchronously, so the form is read (awaited) before one is built."""

    def __init__(self, request: Request, form: list[tuple[str, str]]) -> None:
        super().__init__(method=request.method, uri=str(request.url), headers=request.headers)
        query = list(request.query_params.multi_items())
        self._args, self._form = dict(query), dict(form)
        self.payload = Payload(query + form)

    @classmethod
    async def read(cls, request: Request) -> SandboxRequest:
        form = list((await request.form()).multi_items()) if request.method == "POST" else []
        return cls(request, [(name, str(value)) for name, value in form])

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class SandboxServer(AuthorizationServer):
    """Authlib's authorization server, answering with Litestar responses. Every call runs on the event
    loop without awaiting, so a token request is handled whole before the next: two refreshes with one
    refresh token cannot both win, and counters need no lock."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(scopes_supported=SCOPES)
        self.sandbox = sandbox
        generator = BearerTokenGenerator(
            access_token_generator=lambda **_: generate_token(42),
            refresh_token_generator=lambda **_: generate_token(48),
            expires_generator=lambda client, grant_type: sandbox.switches.access_token_ttl,
        )
        self.register_token_generator("default", generator)
        self.register_grant(AuthorizationCodeGrant, [PkceS256Required(), SandboxOpenIDCode(sandbox)])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation)

    def query_client(self, client_id: str) -> Client | None:
        return self.sandbox.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        record = Token(
            client=request.client,
            scope=token.get("scope", ""),
            access_token=token["access_token"],
            expires_in=token["expires_in"],
            refresh_token=token.get("refresh_token"),
        )
        self.sandbox.by_access[record.access_token] = record
        if record.refresh_token:
            self.sandbox.by_refresh[record.refresh_token] = record

    def create_oauth2_request(self, request: SandboxRequest) -> SandboxRequest:
        return request

    def handle_response(self, status_code: int, payload: Any, headers: list[tuple[str, str]]) -> Response:
        header_map = dict(headers)
        media_type = header_map.pop("Content-Type", MediaType.TEXT)
        return Response(payload, status_code=status_code, headers=header_map, media_type=media_type)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's default raises; nothing here listens for signals."""


class Sandbox:
    """All of one sandbox's state: its client, codes, tokens, key, switches and counters."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        client = Client(
            client_id=config.client_id,
            client_secret=config.client_secret,
            redirect_uris=config.redirect_uris,
            name=config.client_name,
            allow_loopback_redirects=config.allow_loopback_redirects,
        )
        self.clients = {client.client_id: client}
        self.codes: dict[str, AuthorizationCode] = {}
        self.by_access: dict[str, Token] = {}
        self.by_refresh: dict[str, Token] = {}
        self.switches = Switches(access_token_ttl=config.access_token_ttl)
        self.stats = Stats()
        self.key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
        self.server = SandboxServer(self)
        self.protector = ResourceProtector()
        self.protector.register_token_validator(BearerValidator(self))
        base = config.issuer
        self.metadata = OpenIDProviderMetadata(
            issuer=base,
            authorization_endpoint=f"{base}/authorize",
            token_endpoint=f"{base}/token",
            revocation_endpoint=f"{base}/revoke",
            userinfo_endpoint=f"{base}/userinfo",
            jwks_uri=f"{base}/jwks",
            scopes_supported=SCOPES,
            response_types_supported=["code"],
            grant_types_supported=["authorization_code", "refresh_token"],
            code_challenge_methods_supported=["S256"],
            token_endpoint_auth_methods_supported=AUTH_METHODS,
            revocation_endpoint_auth_methods_supported=AUTH_METHODS,
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            claims_supported=["sub", "email", "name", "iss", "aud", "exp", "iat", "auth_time", "nonce"],
        )
        self.metadata.validate()

    def bearer(self, request: Request) -> Token | Response:
        """The valid, unexpired, unrevoked access token of the request, or the 401 to answer."""
        try:
            return self.protector.validate_request(None, request)
        except OAuth2Error as error:
            return self.server.handle_response(*error())


# --- routes ----------------------------------------------------------------------------------------------


@route("/authorize", http_method=["GET", "POST"])
async def authorize(request: Request, sandbox: NamedDependency[Sandbox]) -> Response:
    oauth_request = await SandboxRequest.read(request)
    try:
        grant = sandbox.server.get_consent_grant(oauth_request, end_user=USER)
    except OAuth2Error as error:
        if error.redirect_uri:  # set by Authlib only once the client and the redirect URI are known good
            return sandbox.server.handle_error_response(oauth_request, error)
        return _page("Sandbox: cannot authorize", f"<h1>{_e(error.error)}</h1><p>{_e(error.description)}</p>", 400)
    if request.method == "GET":
        return _consent_page(request, grant.client, oauth_request)
    allowed = oauth_request.form.get("decision") == "allow"
    return sandbox.server.create_authorization_response(
        oauth_request, grant_user=USER if allowed else None, grant=grant
    )


@post("/token")
async def token(request: Request, sandbox: NamedDependency[Sandbox]) -> Response:
    oauth_request = await SandboxRequest.read(request)
    # Counted on arrival, before any simulated slowness, so a test sees every refresh attempt.
    sandbox.stats.token_requests += 1
    if oauth_request.payload.grant_type == "refresh_token":
        sandbox.stats.refresh_requests += 1
        mode = sandbox.switches.token_mode
        if mode == "invalid_grant":
            return Response({"error": "invalid_grant"}, status_code=400, headers={"Cache-Control": "no-store"})
        if mode == "error_500":
            return Response("sandbox: simulated provider failure", status_code=500, media_type=MediaType.TEXT)
        if mode == "slow":
            await asyncio.sleep(SLOW_SECONDS)
    return sandbox.server.create_token_response(oauth_request)


@post("/revoke")
async def revoke(request: Request, sandbox: NamedDependency[Sandbox]) -> Response:
    return sandbox.server.create_endpoint_response("revocation", await SandboxRequest.read(request))


@route("/userinfo", http_method=["GET", "POST"])
async def userinfo(request: Request, sandbox: NamedDependency[Sandbox]) -> Response:
    found = sandbox.bearer(request)
    return found if isinstance(found, Response) else Response(dict(USER))


@get("/api/me")
async def api_me(request: Request, sandbox: NamedDependency[Sandbox]) -> Response:
    """The provider's own API, as a connection would call it: proves a token is still honoured."""
    found = sandbox.bearer(request)
    return found if isinstance(found, Response) else Response({"user": dict(USER), "scope": found.scope})


@get("/jwks")
async def jwks(sandbox: NamedDependency[Sandbox]) -> dict[str, Any]:
    return dict(KeySet([sandbox.key]).as_dict(private=False))


@get("/.well-known/openid-configuration")
async def discovery(sandbox: NamedDependency[Sandbox]) -> dict[str, Any]:
    return dict(sandbox.metadata)


@post("/_control", status_code=200)
async def control(data: JSONBody[dict[str, Any]], sandbox: NamedDependency[Sandbox]) -> Response:
    try:
        sandbox.switches.apply(data)
    except ValueError as error:
        return Response({"error": str(error)}, status_code=400)
    return Response(asdict(sandbox.switches))


@get("/_stats")
async def stats(sandbox: NamedDependency[Sandbox]) -> dict[str, int]:
    live = sum(1 for t in sandbox.by_access.values() if not t.is_expired() and not t.is_revoked())
    return asdict(sandbox.stats) | {"active_access_tokens": live}


def _e(text: object) -> str:
    return html.escape(str(text or ""))


def _page(title: str, body: str, status_code: int = 200) -> Response:
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>'
        "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;color:#222}"
        "button{font:inherit;padding:.4rem 1.2rem;margin-right:.5rem}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return Response(page, status_code=status_code, media_type=MediaType.HTML)


def _consent_page(request: Request, client: Client, oauth_request: SandboxRequest) -> Response:
    scopes = "".join(f"<li>{_e(scope)}</li>" for scope in scope_to_list(oauth_request.scope) or [])
    hidden = "".join(
        f'<input type="hidden" name="{_e(name)}" value="{_e(value)}">'
        for name, values in oauth_request.payload.datalist.items()
        if name != CSRF_FIELD  # a token smuggled into the query must not stand in for this page's
        for value in values
    )
    hidden += f'<input type="hidden" name="{CSRF_FIELD}" value="{_e(csrf_token({"request": request}))}">'
    body = (
        f'<h1 data-testid="consent-title">{_e(client.name)} wants to use your Sandbox account</h1>'
        f"<p>Signed in as {_e(USER['name'])} ({_e(USER['email'])}). It asks for:</p>"
        f'<ul data-testid="consent-scopes">{scopes or "<li>(no scope)</li>"}</ul>'
        f'<form method="post" action="/authorize">{hidden}'
        '<button name="decision" value="allow" data-testid="allow">Allow</button>'
        '<button name="decision" value="deny" data-testid="deny">Deny</button></form>'
    )
    return _page(f"Sandbox: authorize {client.name}", body)


def _csrf_secret(config: SandboxConfig) -> str:
    """The same for every run of the same sandbox: the browser keeps its CSRF cookie across a restart
    of `./task dev`, and a cookie signed with a forgotten random secret would refuse every consent."""
    return hashlib.sha256(f"sandbox-csrf:{config.issuer}:{config.client_secret}".encode()).hexdigest()


def create_app(config: SandboxConfig) -> Litestar:
    sandbox = Sandbox(config)
    return Litestar(
        route_handlers=[authorize, token, revoke, userinfo, api_me, jwks, discovery, control, stats],
        dependencies={"sandbox": Provide(lambda: sandbox, use_cache=True, sync_to_thread=False)},
        state=State({"sandbox": sandbox}),  # the test fixture (tests/oauth_sandbox.py) reads its counters here
        openapi_config=None,
        csrf_config=CSRFConfig(secret=_csrf_secret(config), cookie_name="sandbox_csrf", exclude=MACHINE_ROUTES),
        # Its own tracebacks, but hands off the root logger: the sandbox often runs inside a test process.
        logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="always"),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sandbox",
        description="A local OAuth 2.0 / OpenID Connect provider for development and tests.",
    )
    parser.add_argument("--port", type=int, default=8002, help="port on 127.0.0.1 (default 8002)")
    parser.add_argument("--client-id", default="intime-dev", help="the registered client (default intime-dev)")
    parser.add_argument(
        "--client-secret",
        default=os.environ.get("INTIME_SANDBOX_CLIENT_SECRET", "sandbox-dev-secret"),
        help="its secret (default: $INTIME_SANDBOX_CLIENT_SECRET, else sandbox-dev-secret)",
    )
    parser.add_argument(
        "--redirect-uri", dest="redirect_uris", action="append", default=[], metavar="URI", help="repeatable"
    )
    parser.add_argument("--access-token-ttl", type=int, default=120, metavar="SECONDS", help="default 120")
    parser.add_argument(
        "--allow-loopback-redirects", action="store_true", help="also accept any http://127.0.0.1 or localhost URI"
    )
    args = parser.parse_args(argv)
    if not args.redirect_uris and not args.allow_loopback_redirects:
        parser.error("give at least one --redirect-uri (or --allow-loopback-redirects)")
    config = SandboxConfig(
        client_id=args.client_id,
        client_secret=args.client_secret,
        redirect_uris=args.redirect_uris,
        issuer=f"http://127.0.0.1:{args.port}",
        access_token_ttl=args.access_token_ttl,
        allow_loopback_redirects=args.allow_loopback_redirects,
    )
    print(f"[sandbox] OAuth provider on {config.issuer} for client {config.client_id}", file=sys.stderr, flush=True)

    import uvicorn

    uvicorn.run(create_app(config), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
