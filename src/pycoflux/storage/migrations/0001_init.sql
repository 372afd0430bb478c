-- The orchestration store of one project (one epoch). Row ids are internal;
-- everything the outside world sees is addressed by external ids.

CREATE TABLE workspaces (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  base_id INTEGER REFERENCES workspaces (id),
  state INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);

CREATE TABLE manifests (
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  module TEXT NOT NULL,
  target TEXT NOT NULL,
  definition TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, module, target)
);

CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  parent_execution_id INTEGER,
  idempotency_key TEXT,
  requires TEXT NOT NULL DEFAULT '{}',
  memo INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  created_by TEXT
);
CREATE INDEX runs_idempotency ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE steps (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs (id),
  number INTEGER NOT NULL,
  parent_execution_id INTEGER,
  module TEXT NOT NULL,
  target TEXT NOT NULL,
  type INTEGER NOT NULL,
  options TEXT NOT NULL,
  arguments TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (run_id, number)
);
CREATE INDEX steps_parent ON steps (parent_execution_id);

CREATE TABLE executions (
  id INTEGER PRIMARY KEY,
  step_id INTEGER NOT NULL REFERENCES steps (id),
  attempt INTEGER NOT NULL,
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  execute_after INTEGER,
  created_at INTEGER NOT NULL,
  created_by TEXT,
  UNIQUE (step_id, attempt)
);

CREATE TABLE assignments (
  execution_id INTEGER PRIMARY KEY REFERENCES executions (id),
  session_id INTEGER NOT NULL REFERENCES sessions (id),
  assigned_at INTEGER NOT NULL
);
CREATE INDEX assignments_session ON assignments (session_id);

-- A value or an error reported for an execution (at most one).
CREATE TABLE results (
  execution_id INTEGER PRIMARY KEY REFERENCES executions (id),
  value TEXT,
  error TEXT,
  retryable INTEGER,
  created_at INTEGER NOT NULL
);

-- The terminal marker; an execution without one is live.
CREATE TABLE completions (
  execution_id INTEGER PRIMARY KEY REFERENCES executions (id),
  kind INTEGER NOT NULL,
  successor_id INTEGER REFERENCES executions (id),
  created_at INTEGER NOT NULL,
  created_by TEXT
);

-- Live executions, kept small so the scheduler never scans history.
CREATE TABLE queue (
  execution_id INTEGER PRIMARY KEY REFERENCES executions (id)
);

CREATE TABLE children (
  parent_id INTEGER NOT NULL REFERENCES executions (id),
  child_id INTEGER NOT NULL REFERENCES executions (id),
  group_id INTEGER,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (parent_id, child_id)
);

CREATE TABLE groups (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  group_id INTEGER NOT NULL,
  name TEXT,
  PRIMARY KEY (execution_id, group_id)
);

-- What an execution waited on (select handles); successors of a suspension
-- become runnable once any of these resolves.
CREATE TABLE dependencies (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  dependency_id INTEGER NOT NULL REFERENCES executions (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, dependency_id)
);

CREATE TABLE sessions (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  secret_hash TEXT NOT NULL,
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  provides TEXT NOT NULL DEFAULT '{}',
  accepts TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  activated_at INTEGER,
  expired_at INTEGER
);
