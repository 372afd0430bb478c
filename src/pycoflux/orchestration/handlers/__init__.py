"""Command handlers of the orchestration core, one family per concept."""
