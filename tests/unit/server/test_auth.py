"""Credential primitives: patterns, bearer parsing, super and service tokens, JWT verification."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from pycoflux.server import auth, config, identity, tokens
from tests.support.idp import IdentityProvider
from tests.unit.server.conftest import FakeFetch

HOST = "acme.localhost:7777"


# --- Workspace patterns (auth-and-config.md §7.3) -------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "name", "granted"),
    [
        ("*", "anything/below", True),
        ("staging", "staging", True),
        ("staging", "staging/x", False),
        ("production/*", "production/eu", True),
        ("production/*", "production/eu/blue", True),
        ("production/*", "production", False),
        ("production/*", "production-2/eu", False),
    ],
)
def test_matching(pattern: str, name: str, granted: bool) -> None:
    assert auth.matches(pattern, name) is granted


@pytest.mark.parametrize(
    ("requested", "covered"),
    [
        ("development/*", True),
        ("development/joe", True),
        ("development/joe/*", True),
        ("*", False),
        ("development", False),
        ("production", False),
        ("development-2/*", False),
    ],
)
def test_coverage_for_a_caller_holding_a_subtree(requested: str, covered: bool) -> None:
    assert auth.covers(("development/*",), requested) is covered


def test_coverage_for_an_exact_name_and_for_full_access() -> None:
    assert auth.covers(("staging",), "staging")
    assert not auth.covers(("staging",), "staging/*")
    assert not auth.covers(("staging",), "staging/feature-1")
    assert auth.covers(("*",), "*")


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [("*", True), ("a", True), ("a/b/*", True), ("", False), ("a//b", False), ("a/*/b", False)],
)
def test_pattern_validation(pattern: str, valid: bool) -> None:
    assert auth.valid_pattern(pattern) is valid


# --- Bearer parsing, super token -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("Bearer  abc ", "abc"),
        ("Bearer ", None),
        ("Bearer", None),
        ("bearer abc", None),
        ("Basic dXNlcjpwYXNz", None),
        (None, None),
    ],
)
def test_bearer(header: str | None, token: str | None) -> None:
    assert auth.bearer(header) == token


def test_super_token_hash_and_legacy_readings() -> None:
    digest = hashlib.sha256(b"s3cret").hexdigest()
    hashed = config.from_env({"COFLUX_SUPER_TOKEN_HASH": digest})
    assert auth.is_super_token(hashed, "s3cret")
    assert not auth.is_super_token(hashed, digest)  # knowing the hash is not enough
    assert not auth.is_super_token(hashed, "wrong")
    plain = config.from_env({"COFLUX_SUPER_TOKEN": "s3cret"})
    assert auth.is_super_token(plain, "s3cret")
    legacy_hash = config.from_env({"COFLUX_SUPER_TOKEN": digest})
    assert auth.is_super_token(legacy_hash, "s3cret")
    assert not auth.is_super_token(config.from_env({}), "s3cret")


def test_request_host_drops_default_ports() -> None:
    assert auth.request_host("Acme.Localhost:7777") == "acme.localhost:7777"
    assert auth.request_host("coflux.example.com:443") == "coflux.example.com"
    assert auth.request_host("coflux.example.com:80") == "coflux.example.com"
    assert auth.request_host(None) == ""


# --- Service tokens (§7.1-7.2) ---------------------------------------------------------------


def test_signature_test_vector() -> None:
    random_part = "00112233445566778899aabbccddeeff"
    assert tokens.signature("test-secret", "acme", random_part) == "0b386c7a"
    token = f"cflx_{random_part}0b386c7a"
    assert tokens.verified_hash(token, "test-secret", "acme") == (
        hashlib.sha256(random_part.encode()).hexdigest()
    )
    assert tokens.verified_hash(token, "test-secret", "other") is None
    assert tokens.verified_hash(token, "another-secret", "acme") is None
    assert tokens.verified_hash(token[:-1] + "d", "test-secret", "acme") is None
    assert tokens.verified_hash(token + "0", "test-secret", "acme") is None


def test_generated_tokens_have_the_documented_shape() -> None:
    new = tokens.generate("s", "p")
    assert len(new.token) == 45 and new.token.startswith("cflx_")
    assert all(c in "0123456789abcdef" for c in new.token[5:])
    assert tokens.verified_hash(new.token, "s", "p") == new.token_hash
    assert len(tokens.external_id()) == 13


# --- Failed-authentication limiter -----------------------------------------------------------


def test_failure_limiter_blocks_a_client_for_the_rest_of_the_window() -> None:
    now = [1000.0]
    limiter = auth.FailureLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.blocked("1.2.3.4")
        limiter.failed("1.2.3.4")
    assert limiter.blocked("1.2.3.4")
    assert not limiter.blocked("5.6.7.8")
    assert limiter.retry_after("1.2.3.4") == 60
    now[0] += 60
    assert not limiter.blocked("1.2.3.4")


# --- JWKS cache (§9.2) -----------------------------------------------------------------------


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider()  # keys and minting only; not started


def studio_config(idp: IdentityProvider, teams: str = "t1,t2") -> config.ServerConfig:
    return config.from_env({"COFLUX_STUDIO_TEAMS": teams, "COFLUX_STUDIO_URL": idp.url})


async def test_keys_are_fetched_lazily_refetched_on_a_miss_and_dropped_when_unpublished(
    idp: IdentityProvider,
) -> None:
    fetch = FakeFetch(idp)
    verifier = identity.StudioVerifier(studio_config(idp), fetch)
    assert fetch.urls == []
    assert await verifier.verify(idp.studio_token("t1", HOST), HOST) is not None
    assert fetch.urls == [f"{idp.url}/.well-known/jwks.json"]
    assert await verifier.verify(idp.studio_token("t1", HOST), HOST) is not None
    assert len(fetch.urls) == 1  # cached
    rotated = idp.add_key()
    assert await verifier.verify(idp.mint(_claims(idp), kid=rotated), HOST) is not None
    assert len(fetch.urls) == 2  # refetched once on the unknown kid
    idp.remove_key(rotated)
    unknown = idp.add_key(publish=False)
    assert await verifier.verify(idp.mint(_claims(idp), kid=unknown), HOST) is None
    assert await verifier.verify(idp.mint(_claims(idp), kid=rotated), HOST) is None


async def test_cached_keys_survive_a_failed_fetch_but_a_cold_cache_rejects(
    idp: IdentityProvider,
) -> None:
    fetch = FakeFetch(idp)
    fetch.down = True
    cold = identity.StudioVerifier(studio_config(idp), fetch)
    assert await cold.verify(idp.studio_token("t1", HOST), HOST) is None
    fetch.down = False
    warm = identity.StudioVerifier(studio_config(idp), fetch)
    assert await warm.verify(idp.studio_token("t1", HOST), HOST) is not None
    fetch.down = True
    assert await warm.verify(idp.studio_token("t1", HOST), HOST) is not None


async def test_keys_are_refreshed_after_an_hour(idp: IdentityProvider) -> None:
    now = [0.0]
    fetch = FakeFetch(idp)
    verifier = identity.StudioVerifier(studio_config(idp), fetch)
    verifier.keys = identity.KeySet(verifier.keys._url, fetch, clock=lambda: now[0])
    assert await verifier.verify(idp.studio_token("t1", HOST), HOST) is not None
    idp.remove_key(idp.studio_kid)
    assert await verifier.verify(idp.studio_token("t1", HOST), HOST) is not None
    now[0] += identity.KEY_MAX_AGE + 1
    assert await verifier.verify(idp.studio_token("t1", HOST), HOST) is None


# --- Studio claims (§9.1) --------------------------------------------------------------------


def _claims(idp: IdentityProvider, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": idp.url,
        "aud": f"t1:{HOST}",
        "sub": "user-1",
        "exp": int(time.time()) + 300,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def test_a_valid_studio_token_and_its_workspaces_claim(idp: IdentityProvider) -> None:
    verifier = identity.StudioVerifier(studio_config(idp), FakeFetch(idp))
    verified = await verifier.verify(idp.mint(_claims(idp)), HOST)
    assert verified == identity.Identity(subject="user-1", workspaces=None)
    scoped = idp.mint(_claims(idp, aud=f"t2:{HOST}", workspaces=["staging", "dev/*"]))
    assert (await verifier.verify(scoped, HOST)) == identity.Identity(
        subject="user-1", workspaces=("staging", "dev/*")
    )
    starred = idp.mint(_claims(idp, workspaces=["staging", "*"]))
    assert (await verifier.verify(starred, HOST)) == identity.Identity(
        subject="user-1", workspaces=None
    )
    assert await verifier.verify(idp.mint(_claims(idp, exp=None)), HOST) is not None


def _wrong_tokens(idp: IdentityProvider) -> dict[str, str]:
    now = int(time.time())
    other_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "expired": idp.mint(_claims(idp, exp=now - 1)),
        "future nbf": idp.mint(_claims(idp, nbf=now + 60)),
        "wrong iss": idp.mint(_claims(idp, iss="https://studio.coflux.com")),
        "iss with slash": idp.mint(_claims(idp, iss=idp.url + "/")),
        "unknown team": idp.mint(_claims(idp, aud=f"t3:{HOST}")),
        "wrong host": idp.mint(_claims(idp, aud="t1:other.localhost:7777")),
        "wrong port": idp.mint(_claims(idp, aud="t1:acme.localhost:7778")),
        "missing aud": idp.mint(_claims(idp, aud=None)),
        "list aud": idp.mint(_claims(idp, aud=[f"t1:{HOST}"])),
        "missing sub": idp.mint(_claims(idp, sub=None)),
        "bad workspaces": idp.mint(_claims(idp, workspaces="staging")),
        "missing kid": jwt.encode(_claims(idp), idp._keys[idp.studio_kid][1], algorithm="EdDSA"),
        "unknown kid": idp.mint(_claims(idp), headers={"kid": "nope"}),
        "wrong signature": idp.mint(_claims(idp), key=other_key),
        "HS256": jwt.encode(
            _claims(idp), "k" * 32, algorithm="HS256", headers={"kid": idp.studio_kid}
        ),
        "not a jwt": "a.b.c",
    }


async def test_every_wrong_studio_token_is_rejected(idp: IdentityProvider) -> None:
    verifier = identity.StudioVerifier(studio_config(idp), FakeFetch(idp))
    for case, token in _wrong_tokens(idp).items():
        assert await verifier.verify(token, HOST) is None, case


async def test_an_empty_team_list_rejects_every_token(idp: IdentityProvider) -> None:
    verifier = identity.StudioVerifier(studio_config(idp, teams=""), FakeFetch(idp))
    assert await verifier.verify(idp.mint(_claims(idp)), HOST) is None


# --- Any OIDC issuer -------------------------------------------------------------------------


def oidc_config(idp: IdentityProvider, **extra: str) -> config.ServerConfig:
    return config.from_env(
        {"COFLUX_OIDC_ISSUER": idp.url, "COFLUX_OIDC_AUDIENCE": "coflux-%", **extra}
    )


async def test_oidc_tokens_are_checked_against_the_discovered_keys(idp: IdentityProvider) -> None:
    rsa_kid = idp.add_key("rsa")
    fetch = FakeFetch(idp)
    verifier = identity.OidcVerifier(oidc_config(idp, COFLUX_OIDC_WORKSPACES_CLAIM="groups"), fetch)
    now = int(time.time())
    good = {"iss": idp.url, "aud": ["coflux-acme", "x"], "sub": "u", "exp": now + 60}
    verified = await verifier.verify(idp.mint(good, kid=rsa_kid), "acme")
    assert verified == identity.Identity(subject="u", workspaces=None)
    assert fetch.urls[0].endswith("/.well-known/openid-configuration")
    grouped = await verifier.verify(
        idp.mint({**good, "groups": "dev/* staging"}, kid=rsa_kid), "acme"
    )
    assert grouped is not None and grouped.workspaces == ("dev/*", "staging")
    rejected = {
        "other project": (good, "other"),
        "no exp": ({k: v for k, v in good.items() if k != "exp"}, "acme"),
        "wrong issuer": ({**good, "iss": "https://elsewhere"}, "acme"),
        "wrong audience": ({**good, "aud": "coflux"}, "acme"),
    }
    for case, (claims, project) in rejected.items():
        assert await verifier.verify(idp.mint(claims, kid=rsa_kid), project) is None, case
    # EdDSA is allowed by default, HS256 never is.
    assert await verifier.verify(idp.mint(good), "acme") is not None
    hs = jwt.encode(good, "k" * 32, algorithm="HS256", headers={"kid": rsa_kid})
    assert await verifier.verify(hs, "acme") is None
    only_rsa = identity.OidcVerifier(oidc_config(idp, COFLUX_OIDC_ALGORITHMS="RS256"), fetch)
    assert await only_rsa.verify(idp.mint(good), "acme") is None
