"""The server app in-process (httpx ASGI transport), with a fake JWKS fetch for Studio/OIDC."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pycoflux.server import app, auth, config, identity
from tests.support.idp import IdentityProvider

SUPER = "s3cret"
SUPER_HASH = hashlib.sha256(SUPER.encode()).hexdigest()
HOST = "acme.localhost:7777"


class FakeFetch:
    """Serves an IdP's documents without HTTP; records the URLs asked for, can fail."""

    def __init__(self, idp: IdentityProvider) -> None:
        self.idp = idp
        self.urls: list[str] = []
        self.down = False

    async def __call__(self, url: str) -> Any:
        self.urls.append(url)
        if self.down:
            raise identity.FetchError("down")
        if url.endswith("/openid-configuration"):
            return {"issuer": self.idp.url, "jwks_uri": f"{self.idp.url}/.well-known/jwks.json"}
        return self.idp.jwks()


@dataclass
class Harness:
    server: app.Server
    client: httpx.AsyncClient
    fetch: FakeFetch
    idp: IdentityProvider

    def bearer(self, token: str | None) -> dict[str, str]:
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    async def call(self, name: str, body: Any = None, token: str | None = SUPER) -> httpx.Response:
        return await self.client.post(f"/api/{name}", json=body or {}, headers=self.bearer(token))

    async def ok(self, name: str, body: Any = None, token: str | None = SUPER) -> Any:
        response = await self.call(name, body, token)
        assert response.status_code in (200, 204), response.text
        return response.json() if response.status_code == 200 else None


Serve = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """``async with serve(ENV=...) as h``: an app on its own data dir, auth on by default."""

    @contextlib.asynccontextmanager
    async def start(client: str = "10.0.0.1", **env: str) -> AsyncIterator[Harness]:
        idp = IdentityProvider()
        settings = {
            "COFLUX_DATA_DIR": str(tmp_path / "data"),
            "COFLUX_PUBLIC_HOST": "%.localhost:7777",
            "COFLUX_SUPER_TOKEN_HASH": SUPER_HASH,
            "COFLUX_SECRET": "server-secret",
            "COFLUX_STUDIO_TEAMS": "t1",
            "COFLUX_STUDIO_URL": idp.url,
            **env,
        }
        resolved = config.from_env({k: v for k, v in settings.items() if v != "<unset>"})
        app.check_data_dir(resolved)
        application = app.create_app(resolved)
        server: app.Server = application.state.server
        fetch = FakeFetch(idp)
        server.authenticator = auth.Authenticator(resolved, fetch=fetch)
        transport = httpx.ASGITransport(app=application, client=(client, 1234))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as http:
            try:
                yield Harness(server, http, fetch, idp)
            finally:
                await server.projects.stop()
                await server.authenticator.close()

    return start
