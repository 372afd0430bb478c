-- The rest of the 0.12 orchestration model: argument keys on steps (cache, memo,
-- defer), inputs, assets, checkpoints and streams.

ALTER TABLE steps ADD COLUMN cache_key TEXT;
ALTER TABLE steps ADD COLUMN memo_key TEXT;
ALTER TABLE steps ADD COLUMN defer_key TEXT;
CREATE INDEX steps_cache_key ON steps (cache_key) WHERE cache_key IS NOT NULL;
CREATE INDEX steps_memo_key ON steps (run_id, memo_key) WHERE memo_key IS NOT NULL;
CREATE INDEX executions_workspace ON executions (workspace_id);
CREATE INDEX completions_successor ON completions (successor_id) WHERE successor_id IS NOT NULL;

-- Manifests are inherited from base workspaces; a module registered empty or archived
-- here hides the base's module of that name.
CREATE TABLE module_tombstones (
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  module TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, module)
);

-- Human input requested by an execution; numbered per run ("<run>/i<n>").
CREATE TABLE inputs (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs (id),
  number INTEGER NOT NULL,
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  key TEXT,
  template TEXT NOT NULL,
  placeholders TEXT NOT NULL,
  schema TEXT,
  title TEXT,
  actions TEXT,
  initial TEXT,
  requires TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  UNIQUE (run_id, number)
);
CREATE INDEX inputs_key ON inputs (run_id, key) WHERE key IS NOT NULL;

-- At most one response: 1 value, 2 dismissed, 3 cancelled.
CREATE TABLE input_responses (
  input_id INTEGER PRIMARY KEY REFERENCES inputs (id),
  type INTEGER NOT NULL,
  value TEXT,
  created_at INTEGER NOT NULL,
  created_by TEXT
);

-- Executions that submitted (or re-obtained, by key) an input.
CREATE TABLE execution_inputs (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  input_id INTEGER NOT NULL REFERENCES inputs (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, input_id)
);

-- Executions waiting on an input (select handles; suspended successors).
CREATE TABLE input_dependencies (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  input_id INTEGER NOT NULL REFERENCES inputs (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, input_id)
);
CREATE INDEX input_dependencies_input ON input_dependencies (input_id);

-- Immutable, content-addressed collections of blobs.
CREATE TABLE assets (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  hash TEXT NOT NULL UNIQUE,
  name TEXT,
  entries TEXT NOT NULL,
  total_count INTEGER NOT NULL,
  total_size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);

CREATE TABLE execution_assets (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  asset_id INTEGER NOT NULL REFERENCES assets (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, asset_id)
);

CREATE TABLE asset_dependencies (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  asset_id INTEGER NOT NULL REFERENCES assets (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, asset_id)
);

-- Metric definitions an execution declared (the data points live in the metrics store).
CREATE TABLE metric_definitions (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  key TEXT NOT NULL,
  definition TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, key)
);

-- Named values that survive across attempts of a step; a NULL value is a reset
-- (tombstone), distinct from a stored null value.
CREATE TABLE checkpoints (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  name TEXT NOT NULL,
  value TEXT,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, name)
);

-- Streams belong to a step in a workspace; attempts of the step continue them.
CREATE TABLE streams (
  id INTEGER PRIMARY KEY,
  step_id INTEGER NOT NULL REFERENCES steps (id),
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  number INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (step_id, number)
);

-- buffer: NULL when unbounded (no demand is ever sent).
CREATE TABLE stream_registrations (
  stream_id INTEGER NOT NULL REFERENCES streams (id),
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  position INTEGER NOT NULL,
  buffer INTEGER,
  timeout_ms INTEGER,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (stream_id, execution_id),
  UNIQUE (execution_id, position)
);

CREATE TABLE stream_items (
  stream_id INTEGER NOT NULL REFERENCES streams (id),
  sequence INTEGER NOT NULL,
  value TEXT NOT NULL,
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (stream_id, sequence)
);

-- reason: 0 complete, 1 errored, 2 lifecycle (reported as `label`), 3 timeout.
CREATE TABLE stream_closures (
  stream_id INTEGER PRIMARY KEY REFERENCES streams (id),
  reason INTEGER NOT NULL,
  label TEXT NOT NULL,
  error TEXT,
  execution_id INTEGER REFERENCES executions (id),
  created_at INTEGER NOT NULL
);

-- Consumers of a stream (subscriptions and waits), for lineage.
CREATE TABLE stream_dependencies (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  stream_id INTEGER NOT NULL REFERENCES streams (id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, stream_id)
);

-- A suspended consumer's successor stays queued until the stream reaches `sequence`.
CREATE TABLE stream_waits (
  execution_id INTEGER NOT NULL REFERENCES executions (id),
  stream_id INTEGER NOT NULL REFERENCES streams (id),
  sequence INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (execution_id, stream_id)
);
