"""agent/capture."""
