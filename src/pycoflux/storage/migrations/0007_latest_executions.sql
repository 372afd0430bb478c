-- The newest execution of each target in each workspace, for search: kept by a trigger on
-- every insert (the store's and the epoch copier's), so a search costs what the workspace
-- has targets, not what it has history. Newest is the highest internal id, as before.
CREATE TABLE latest_executions (
  workspace_id INTEGER NOT NULL,
  module TEXT NOT NULL,
  target TEXT NOT NULL,
  execution_id INTEGER NOT NULL,
  PRIMARY KEY (workspace_id, module, target)
) STRICT, WITHOUT ROWID;
INSERT INTO latest_executions (workspace_id, module, target, execution_id)
  SELECT e.workspace_id, s.module, s.target, MAX(e.id)
  FROM executions e JOIN steps s ON s.id = e.step_id
  GROUP BY e.workspace_id, s.module, s.target;
-- One statement per line below: the migration runner splits scripts on ";" + newline.
CREATE TRIGGER executions_latest AFTER INSERT ON executions BEGIN INSERT INTO latest_executions (workspace_id, module, target, execution_id) SELECT NEW.workspace_id, module, target, NEW.id FROM steps WHERE id = NEW.step_id ON CONFLICT (workspace_id, module, target) DO UPDATE SET execution_id = MAX(execution_id, excluded.execution_id); END;
