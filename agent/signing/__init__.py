"""agent/signing."""
