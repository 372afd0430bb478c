-- Live executions (no completion yet) by workspace: the queue and modules topics and the
-- workspace's live work read these, and should cost what is live, not the history.
-- ``live`` is cleared in the same transaction that records the completion.
ALTER TABLE executions ADD COLUMN live INTEGER DEFAULT 1;
UPDATE executions SET live = NULL WHERE id IN (SELECT execution_id FROM completions);
CREATE INDEX executions_live ON executions (workspace_id) WHERE live IS NOT NULL;
