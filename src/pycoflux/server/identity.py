"""JWT sign-in: Studio tokens (auth-and-config.md §9) and, beyond upstream, any OIDC issuer.

Theory of operation. Keys come from a JWKS document fetched lazily on the first JWT
(never while JWT sign-in is off), refreshed when the last fetch is over an hour old,
and refetched once when a token names a key id the cache lacks, so key rotation needs
no restart and a removed key stops working after the next fetch. A failed fetch keeps
the keys already cached. Fetches are serialised: callers that queued behind a fetch
use its result instead of fetching again. The fetch is the only outbound call the
server makes for auth; it times out after 10 s and follows no redirects.

Every claim check is explicit (no library defaults, no leeway) so the rules of the
spec are visible here: Studio tokens must be EdDSA with ``iss`` equal to
COFLUX_STUDIO_URL verbatim and ``aud`` = ``team:host`` for an allowed team and this
request's host. OIDC tokens must use an allowed asymmetric algorithm, carry the
configured issuer and audience, and have an ``exp``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from pycoflux.server import config as config_module

log = logging.getLogger("pycoflux.server.auth")

KEY_MAX_AGE = 3600.0
FETCH_TIMEOUT = 10.0

Fetch = Callable[[str], Awaitable[Any]]


class FetchError(Exception):
    """A JWKS or discovery document could not be fetched."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """A verified JWT: who (``sub``) and which workspaces (None = all)."""

    subject: str
    workspaces: tuple[str, ...] | None


def http_fetcher(client: httpx.AsyncClient) -> Fetch:
    async def fetch(url: str) -> Any:
        try:
            response = await client.get(url)
        except httpx.HTTPError as e:
            raise FetchError(f"{url}: {type(e).__name__}") from None
        if response.status_code != 200:
            raise FetchError(f"{url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise FetchError(f"{url}: not JSON") from None

    return fetch


def new_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False)


class KeySet:
    """The cached keys of one JWKS URL."""

    def __init__(
        self,
        url: Callable[[], Awaitable[str]],
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str) -> jwt.PyJWK | None:
        refreshed = False
        if self._fetched_at is None or self._clock() - self._fetched_at > KEY_MAX_AGE:
            await self._refresh(self._generation)
            refreshed = True
        key = self._keys.get(kid)
        if key is None and not refreshed:
            await self._refresh(self._generation)
            key = self._keys.get(kid)
        return key

    async def _refresh(self, seen: int) -> None:
        async with self._lock:
            if self._generation != seen:
                return  # someone refreshed while we waited: use theirs
            self._generation += 1
            self.fetches += 1
            try:
                url = await self._url()
                document = await self._fetch(url)
            except FetchError as e:
                log.warning("cannot fetch signing keys: %s", e)
                return
            keys: dict[str, jwt.PyJWK] = {}
            entries = document.get("keys") if isinstance(document, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                    continue
                try:
                    keys[entry["kid"]] = jwt.PyJWK(entry)
                except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                    log.warning("ignoring unusable signing key %r", entry["kid"])
            self._keys = keys
            self._fetched_at = self._clock()


def _header(token: str) -> dict[str, Any] | None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    return header if isinstance(header, dict) else None


def unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    return issuer if isinstance(issuer, str) else None


def _decode(token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any] | None:
    try:
        claims = jwt.decode(
            token,
            key=key,
            algorithms=[algorithm],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None


def _times_ok(claims: dict[str, Any], now: float, *, require_exp: bool) -> bool:
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is None:
        if require_exp:
            return False
    elif not _number(exp) or exp < now:
        return False
    return nbf is None or (_number(nbf) and nbf <= now)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Malformed(Exception):
    """A claim has the wrong type."""


def _workspaces(value: Any, *, allow_string: bool) -> tuple[str, ...] | None:
    """Workspace patterns from a claim (None = all); Malformed if it is not a list."""
    if value is None:
        return None
    if allow_string and isinstance(value, str):
        value = [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Malformed()
    return None if "*" in value else tuple(value)


class StudioVerifier:
    """Studio JWTs: EdDSA, issuer = COFLUX_STUDIO_URL, audience ``team:host``."""

    def __init__(
        self,
        config: config_module.ServerConfig,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = config.studio_url
        self._teams = frozenset(config.studio_teams or ())
        self._clock = clock

        async def url() -> str:
            return f"{config.studio_base}/.well-known/jwks.json"

        self.keys = KeySet(url, fetch)

    async def verify(self, token: str, host: str) -> Identity | None:
        header = _header(token)
        if header is None or header.get("alg") != "EdDSA" or not isinstance(header.get("kid"), str):
            return None
        key = await self.keys.key(header["kid"])
        if key is None:
            return None
        claims = _decode(token, key, "EdDSA")
        if claims is None or claims.get("iss") != self._issuer:
            return None
        if not _times_ok(claims, self._clock(), require_exp=False):
            return None
        audience = claims.get("aud")
        if not isinstance(audience, str):
            return None
        team, _, audience_host = audience.partition(":")
        if not team or not audience_host or team not in self._teams or audience_host != host:
            return None
        subject = claims.get("sub")
        try:
            workspaces = _workspaces(claims.get("workspaces"), allow_string=False)
        except Malformed:
            return None
        if not isinstance(subject, str) or not subject:
            return None
        return Identity(subject=subject, workspaces=workspaces)


class OidcVerifier:
    """JWTs of any OpenID Connect issuer, found through its discovery document."""

    def __init__(
        self,
        config: config_module.ServerConfig,
        fetch: Fetch,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.oidc_issuer is not None and config.oidc_audience is not None
        self.issuer = config.oidc_issuer
        self._audience = config.oidc_audience
        self._claim = config.oidc_workspaces_claim
        self._algorithms = frozenset(config.oidc_algorithms)
        self._fetch = fetch
        self._clock = clock
        self.keys = KeySet(self._jwks_url, fetch)

    async def _jwks_url(self) -> str:
        # Discovery is re-read with every key refresh, so a moved jwks_uri is followed.
        document = await self._fetch(f"{self.issuer.rstrip('/')}/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise FetchError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise FetchError("discovery document has no jwks_uri")
        return jwks_uri

    async def verify(self, token: str, project_id: str) -> Identity | None:
        header = _header(token)
        if header is None or not isinstance(header.get("kid"), str):
            return None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            return None
        key = await self.keys.key(header["kid"])
        if key is None:
            return None
        claims = _decode(token, key, str(algorithm))
        if claims is None or claims.get("iss") != self.issuer:
            return None
        if not _times_ok(claims, self._clock(), require_exp=True):
            return None
        expected = self._audience.replace("%", project_id)
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or expected not in audiences:
            return None
        subject = claims.get("sub")
        try:
            claim = None if self._claim is None else claims.get(self._claim)
            workspaces = _workspaces(claim, allow_string=True)
        except Malformed:
            return None
        if not isinstance(subject, str) or not subject:
            return None
        return Identity(subject=subject, workspaces=workspaces)
