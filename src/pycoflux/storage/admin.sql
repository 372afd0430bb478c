-- The admin store of one project (admin.sqlite): principals and service tokens.
-- It never rotates, so tokens and the principals that records in any epoch name
-- outlive every orchestration epoch. Times here are Unix seconds.

CREATE TABLE principals (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'token')),
  external_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (kind, external_id)
);

CREATE TABLE tokens (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  -- sha256 hex of the token's random part; the token itself is never stored.
  token_hash TEXT NOT NULL UNIQUE,
  name TEXT,
  workspaces TEXT,
  principal_id INTEGER NOT NULL REFERENCES principals (id),
  created_by INTEGER REFERENCES principals (id),
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER
);
