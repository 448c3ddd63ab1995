"""Reports people open: what the night tells operators in files (rejects report)."""
