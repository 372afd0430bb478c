-- Look-ups that ran on every termination scanned a whole table: which of an execution's
-- streams were closed by it.
CREATE INDEX stream_closures_execution ON stream_closures (execution_id)
  WHERE execution_id IS NOT NULL;
