-- Pools, launchers and the workers they launched (semantics.md §2.16).

-- Content-addressed: a launcher's type and configuration (camelCase JSON, no "type").
CREATE TABLE launchers (
  id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  config TEXT NOT NULL
);

-- Content-addressed pool definitions.
CREATE TABLE pool_definitions (
  id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  launcher_id INTEGER REFERENCES launchers (id),
  provides TEXT NOT NULL DEFAULT '{}',
  accepts TEXT NOT NULL DEFAULT '{}',
  modules TEXT NOT NULL DEFAULT '[]'
);

-- A workspace's pools, append-only: the newest row per name wins; a NULL definition
-- means the pool was deleted.
CREATE TABLE pools (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  name TEXT NOT NULL,
  definition_id INTEGER REFERENCES pool_definitions (id),
  created_at INTEGER NOT NULL,
  created_by TEXT
);
CREATE INDEX pools_name ON pools (workspace_id, name, id);

-- Enabled (0) / disabled (1), per workspace and pool name; the newest row wins.
CREATE TABLE pool_states (
  id INTEGER PRIMARY KEY,
  workspace_id INTEGER NOT NULL REFERENCES workspaces (id),
  name TEXT NOT NULL,
  state INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT
);
CREATE INDEX pool_states_name ON pool_states (workspace_id, name, id);

-- One launched worker: the pool row it was launched for and the session made for it.
CREATE TABLE workers (
  id INTEGER PRIMARY KEY,
  external_id TEXT NOT NULL UNIQUE,
  pool_id INTEGER NOT NULL REFERENCES pools (id),
  session_id INTEGER REFERENCES sessions (id),
  created_at INTEGER NOT NULL
);
CREATE INDEX workers_pool ON workers (pool_id);

-- The launcher's answer: its handle (JSON) or an error.
CREATE TABLE worker_launch_results (
  worker_id INTEGER PRIMARY KEY REFERENCES workers (id),
  data TEXT,
  error TEXT,
  created_at INTEGER NOT NULL
);

-- Active (0) / paused (1) / draining (2); no row means active.
CREATE TABLE worker_states (
  id INTEGER PRIMARY KEY,
  worker_id INTEGER NOT NULL REFERENCES workers (id),
  state INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT
);
CREATE INDEX worker_states_worker ON worker_states (worker_id, id);

CREATE TABLE worker_stops (
  id INTEGER PRIMARY KEY,
  worker_id INTEGER NOT NULL REFERENCES workers (id),
  created_at INTEGER NOT NULL
);
CREATE INDEX worker_stops_worker ON worker_stops (worker_id, id);

CREATE TABLE worker_stop_results (
  stop_id INTEGER PRIMARY KEY REFERENCES worker_stops (id),
  error TEXT,
  created_at INTEGER NOT NULL
);

-- Log tails of ended workers, deduplicated by content hash.
CREATE TABLE worker_logs (
  id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  content TEXT NOT NULL
);

-- A worker is live until it has a row here.
CREATE TABLE worker_deactivations (
  worker_id INTEGER PRIMARY KEY REFERENCES workers (id),
  error TEXT,
  log_id INTEGER REFERENCES worker_logs (id),
  created_at INTEGER NOT NULL
);
