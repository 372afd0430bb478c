-- A workflow's newest runs, by the root step (created with its run, at the same time):
-- the workflow topic reads the newest 50 without visiting the workspace's history.
CREATE INDEX steps_roots ON steps (module, target, created_at, run_id) WHERE number = 1;
