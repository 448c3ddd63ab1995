"""The plumbing every layer may use, and that knows nothing of flows or partners.

Errors and exit codes, the injected clock, structured logs, owner-only file writes,
the run lock, graceful stop on signals, French working days, key-file permissions.
"""
