"""Service tokens: ``cflx_<R><S>``, signed per project with a key derived from COFLUX_SECRET.

``R`` is 32 lowercase hex characters of randomness; ``S`` is the first 4 bytes (8 hex) of
HMAC-SHA256(project_key, R) where project_key = HMAC-SHA256(secret, project id). The
signature binds a token to its project and to the secret, so a token from another
project, or one minted before the secret changed, is refused without a store lookup.
The store keeps only sha256(R) (auth-and-config.md §7).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "cflx_"
ID_ALPHABET = "bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ23456789"
EXTERNAL_ID_LENGTH = 13


def project_key(secret: str, project_id: str) -> bytes:
    return hmac.new(secret.encode(), project_id.encode(), hashlib.sha256).digest()


def signature(secret: str, project_id: str, random_part: str) -> str:
    digest = hmac.new(project_key(secret, project_id), random_part.encode(), hashlib.sha256)
    return digest.digest()[:4].hex()


def token_hash(random_part: str) -> str:
    return hashlib.sha256(random_part.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewToken:
    token: str
    token_hash: str


def generate(secret: str, project_id: str) -> NewToken:
    random_part = secrets.token_hex(16)
    return NewToken(
        token=PREFIX + random_part + signature(secret, project_id, random_part),
        token_hash=token_hash(random_part),
    )


def verified_hash(token: str, secret: str, project_id: str) -> str | None:
    """The store key of a well-formed token correctly signed for this project, else None."""
    body = token[len(PREFIX) :]
    if not token.startswith(PREFIX) or len(body) != 40:
        return None
    random_part, presented = body[:32], body[32:]
    expected = signature(secret, project_id, random_part)
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        return None
    return token_hash(random_part)


def external_id(length: int = EXTERNAL_ID_LENGTH) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))
