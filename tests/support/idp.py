"""A local identity provider for auth tests: Studio's JWKS, device flow and project tokens,
plus an OIDC discovery document, all signed with keys generated in the test.

It runs a small starlette app under uvicorn on a loopback port in a background thread
(so both an in-process CLI and a server subprocess can reach it). Tests mint tokens
with ``mint``/``studio_token``, rotate keys with ``add_key``/``remove_key``, take the
JWKS down with ``jwks_down``, and script the device flow with ``pending_polls`` and
``device_outcome``.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.eventually import eventually
from tests.support.server import free_port

STARTUP_TIMEOUT = 10.0


class IdentityProvider:
    """Studio stand-in and OIDC issuer on ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.port = free_port()
        self._keys: dict[str, tuple[str, Any]] = {}  # kid -> (alg, private key)
        self.published: list[str] = []
        self.jwks_down = False
        self.jwks_requests = 0
        self.pending_polls = 1
        self.device_outcome = "grant"  # or "expired" / "denied"
        self.device_names: list[str] = []
        self.polls = 0
        self.studio_session = "studio-session-" + secrets.token_hex(8)
        self.exchanges: list[dict[str, Any]] = []
        self.project_token_ttl = 300  # seconds, as `expiresIn` of a project-token exchange
        self.user_id = "user-7"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.studio_kid = self.add_key("ed25519")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def oidc_issuer(self) -> str:
        return f"{self.url}/oidc"

    # --- Keys and tokens -------------------------------------------------------------------

    def add_key(self, kind: str = "ed25519", *, publish: bool = True) -> str:
        kid = f"{kind}-{secrets.token_hex(4)}"
        if kind == "ed25519":
            self._keys[kid] = ("EdDSA", ed25519.Ed25519PrivateKey.generate())
        else:
            self._keys[kid] = ("RS256", rsa.generate_private_key(65537, 2048))
        if publish:
            self.published.append(kid)
        return kid

    def remove_key(self, kid: str) -> None:
        self.published.remove(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            alg, private = self._keys[kid]
            codec = OKPAlgorithm if alg == "EdDSA" else RSAAlgorithm
            jwk = codec.to_jwk(private.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys}

    def mint(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        algorithm: str | None = None,
    ) -> str:
        kid = kid or self.studio_kid
        alg, private = self._keys[kid]
        header = {"kid": kid, **(headers or {})}
        return jwt.encode(
            claims, key if key is not None else private, algorithm=algorithm or alg, headers=header
        )

    def studio_token(
        self, team: str, host: str, *, sub: str = "user-1", ttl: int = 300, **extra: Any
    ) -> str:
        claims = {"iss": self.url, "aud": f"{team}:{host}", "sub": sub, "exp": time.time() + ttl}
        return self.mint({**claims, **extra})

    # --- The app ---------------------------------------------------------------------------

    def _app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            self.jwks_requests += 1
            if self.jwks_down:
                return JSONResponse({"error": "down"}, status_code=503)
            return JSONResponse(self.jwks())

        async def discovery(request: Request) -> Response:
            return JSONResponse(
                {"issuer": self.url, "jwks_uri": f"{self.url}/.well-known/jwks.json"}
            )

        async def oidc_discovery(request: Request) -> Response:
            # A second issuer on the same server, for running Studio and OIDC side by side.
            return JSONResponse({"issuer": self.oidc_issuer, "jwks_uri": f"{self.url}/oidc/jwks"})

        async def device(request: Request) -> Response:
            body = await request.json()
            self.device_names.append(body.get("name"))
            return JSONResponse(
                {
                    "device_code": "device-123",
                    "verification_uri": f"{self.url}/activate?code=ABCD",
                    "expires_in": 600,
                    "interval": 1,
                }
            )

        async def device_token(request: Request) -> Response:
            body = await request.json()
            self.polls += 1
            if body.get("device_code") != "device-123":
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            if self.device_outcome == "expired":
                return JSONResponse({"error": "expired_token"}, status_code=400)
            if self.device_outcome == "denied":
                return JSONResponse(
                    {"error": "access_denied", "error_description": "user said no"},
                    status_code=400,
                )
            if self.polls <= self.pending_polls:
                return JSONResponse({"error": "authorization_pending"}, status_code=400)
            return JSONResponse(
                {
                    "access_token": self.studio_session,
                    "user_email": "joe@example.com",
                    "user_id": self.user_id,
                }
            )

        async def project_token(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.studio_session}":
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            body = await request.json()
            self.exchanges.append(body)
            token = self.studio_token(body["team"], body["host"], sub=self.user_id)
            return JSONResponse({"token": token, "expiresIn": self.project_token_ttl})

        return Starlette(
            routes=[
                Route("/.well-known/jwks.json", jwks),
                Route("/.well-known/openid-configuration", discovery),
                Route("/oidc/.well-known/openid-configuration", oidc_discovery),
                Route("/oidc/jwks", jwks),
                Route("/api/auth/device", device, methods=["POST"]),
                Route("/api/auth/device/token", device_token, methods=["POST"]),
                Route("/api/auth/project-token", project_token, methods=["POST"]),
            ]
        )

    # --- Lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self._app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="none",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="test-idp", daemon=True)
        self._thread.start()
        server, thread = self._server, self._thread

        def up() -> bool:
            assert thread.is_alive(), "identity provider exited during start-up"
            return bool(server.started)

        eventually(up, timeout=STARTUP_TIMEOUT)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> IdentityProvider:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
