"""The per-project admin store (``admin.sqlite``): principals and service tokens.

Theory of operation. Unlike the orchestration store this file never rotates, which is
what keeps tokens valid across epochs (auth-and-config.md §7.4). It is tiny and read
on every authenticated request, so the whole of it is mirrored in memory: writes go to
SQLite first (on the project's storage thread) and then swap in new immutable
snapshots, so readers on the event loop never see a half-applied change and never
touch SQLite. The file is created by the first write; a project that never creates a
token or sees a Studio user has none.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pycoflux import errors
from pycoflux.storage import sqlite

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """An identity actions are recorded against: a Studio/OIDC user or a service token."""

    id: int
    kind: str  # "user" | "token"
    external_id: str

    def render(self) -> dict[str, str]:
        return {"type": self.kind, "externalId": self.external_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class Token:
    """A service token's row; ``workspaces`` None means every workspace."""

    id: int
    external_id: str
    token_hash: str
    name: str | None
    workspaces: tuple[str, ...] | None
    principal_id: int
    created_by: int | None
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None

    def active(self, now: int) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at >= now)


class AdminStore:
    """Principals and tokens of one project; writes on one thread, reads from anywhere."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._tokens: MappingProxyType[str, Token] = MappingProxyType({})  # by external id
        self._by_hash: MappingProxyType[str, Token] = MappingProxyType({})
        self._principals: MappingProxyType[int, Principal] = MappingProxyType({})
        self._users: MappingProxyType[str, Principal] = MappingProxyType({})

    # --- Lifecycle (storage thread) ---------------------------------------------------

    def open(self) -> None:
        """Load the file if it exists; otherwise wait for the first write to create it."""
        if self.path.exists():
            self._connect()
            self._load()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def check(self) -> None:
        """Raise StoreError if the file is open but unreadable (health check)."""
        if self._db is None:
            return
        try:
            self._db.execute("SELECT count(*) FROM tokens").fetchone()
        except sqlite3.Error as e:
            raise errors.StoreError(f"admin store: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite.connect(self.path, migrations=False)
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version < SCHEMA_VERSION:
                script = resources.files("pycoflux.storage").joinpath("admin.sql").read_text()
                db.execute("BEGIN")
                for statement in script.split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            self._db = db
        return self._db

    def _load(self) -> None:
        db = self._connect()
        principals = {
            row[0]: Principal(id=row[0], kind=row[1], external_id=row[2])
            for row in db.execute("SELECT id, kind, external_id FROM principals")
        }
        tokens = [
            _token(row)
            for row in db.execute(
                "SELECT id, external_id, token_hash, name, workspaces, principal_id,"
                " created_by, created_at, expires_at, revoked_at FROM tokens ORDER BY id"
            )
        ]
        self._principals = MappingProxyType(principals)
        self._users = MappingProxyType(
            {p.external_id: p for p in principals.values() if p.kind == "user"}
        )
        self._set_tokens(tokens)

    def _set_tokens(self, tokens: list[Token]) -> None:
        self._tokens = MappingProxyType({t.external_id: t for t in tokens})
        self._by_hash = MappingProxyType({t.token_hash: t for t in tokens})

    # --- Reads (any thread) -------------------------------------------------------------

    def token_by_hash(self, token_hash: str) -> Token | None:
        return self._by_hash.get(token_hash)

    def token(self, external_id: str) -> Token | None:
        return self._tokens.get(external_id)

    def principal(self, principal_id: int | None) -> Principal | None:
        return None if principal_id is None else self._principals.get(principal_id)

    def user(self, subject: str) -> Principal | None:
        return self._users.get(subject)

    def tokens_view(self, now: int) -> dict[str, Any]:
        """The ``tokens`` topic: active tokens keyed by external id (times in seconds)."""
        view: dict[str, Any] = {}
        for token in self._tokens.values():
            if not token.active(now):
                continue
            creator = self.principal(token.created_by)
            view[token.external_id] = {
                "id": token.id,
                "externalId": token.external_id,
                "name": token.name,
                "workspaces": None if token.workspaces is None else list(token.workspaces),
                "createdAt": token.created_at,
                "expiresAt": token.expires_at,
                "createdBy": None if creator is None else creator.render(),
            }
        return view

    # --- Writes (storage thread) ----------------------------------------------------------

    def user_principal(self, subject: str, now: int) -> Principal:
        """The user principal for a JWT subject, created on first sight."""
        existing = self._users.get(subject)
        if existing is not None:
            return existing
        principal = self._insert_principal("user", subject, now)
        self._users = MappingProxyType({**self._users, subject: principal})
        return principal

    def _insert_principal(self, kind: str, external_id: str, now: int) -> Principal:
        db = self._connect()
        db.execute(
            "INSERT OR IGNORE INTO principals (kind, external_id, created_at) VALUES (?, ?, ?)",
            (kind, external_id, now),
        )
        (principal_id,) = db.execute(
            "SELECT id FROM principals WHERE kind = ? AND external_id = ?", (kind, external_id)
        ).fetchone()
        principal = Principal(id=principal_id, kind=kind, external_id=external_id)
        self._principals = MappingProxyType({**self._principals, principal_id: principal})
        return principal

    def create_token(
        self,
        *,
        external_id: str,
        token_hash: str,
        name: str | None,
        workspaces: tuple[str, ...] | None,
        created_by: int | None,
        now: int,
    ) -> Token:
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            principal = self._insert_principal("token", external_id, now)
            cursor = db.execute(
                "INSERT INTO tokens (external_id, token_hash, name, workspaces, principal_id,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    external_id,
                    token_hash,
                    name,
                    None if workspaces is None else json.dumps(list(workspaces)),
                    principal.id,
                    created_by,
                    now,
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._load()  # the principal snapshot may hold a row that was rolled back
            raise
        assert cursor.lastrowid is not None
        token = Token(
            id=cursor.lastrowid,
            external_id=external_id,
            token_hash=token_hash,
            name=name,
            workspaces=workspaces,
            principal_id=principal.id,
            created_by=created_by,
            created_at=now,
        )
        self._set_tokens([*self._tokens.values(), token])
        return token

    def revoke(self, external_id: str, now: int) -> Token | None:
        """Mark a token revoked (idempotent); None if there is no such token."""
        token = self._tokens.get(external_id)
        if token is None:
            return None
        if token.revoked_at is not None:
            return token
        self._connect().execute(
            "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            (now, token.id),
        )
        revoked = replace(token, revoked_at=now)
        self._set_tokens([revoked if t.id == token.id else t for t in self._tokens.values()])
        return revoked


def _token(row: tuple[Any, ...]) -> Token:
    workspaces = None if row[4] is None else tuple(json.loads(row[4]))
    return Token(
        id=row[0],
        external_id=row[1],
        token_hash=row[2],
        name=row[3],
        workspaces=workspaces,
        principal_id=row[5],
        created_by=row[6],
        created_at=row[7],
        expires_at=row[8],
        revoked_at=row[9],
    )
