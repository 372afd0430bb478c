"""A real secured server (subprocess) next to a local identity provider."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.idp import IdentityProvider
from tests.support.server import ServerProcess, running_server

SUPER = "integration-super"
SECRET = "integration-secret-value"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


def secured_env(idp: IdentityProvider) -> dict[str, str]:
    return {
        "COFLUX_REQUIRE_AUTH": "true",
        "COFLUX_SUPER_TOKEN_HASH": hashlib.sha256(SUPER.encode()).hexdigest(),
        "COFLUX_SECRET": SECRET,
        "COFLUX_STUDIO_TEAMS": "t1",
        "COFLUX_STUDIO_URL": idp.url,
        "COFLUX_OIDC_ISSUER": idp.oidc_issuer,
        "COFLUX_OIDC_AUDIENCE": "coflux",
    }


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, idp: IdentityProvider
) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("secured") / "data"
    with running_server(data, env=secured_env(idp)) as server:
        yield server
