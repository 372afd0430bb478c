"""Worker tests: a fake server and real SDK adapter processes."""
