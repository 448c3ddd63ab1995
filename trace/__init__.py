"""The trace: the history of exchanges (runs, emissions, records, rejects), kept in SQLite.

It holds no personal data: file names, counts, hashes, dates, codes. Record identities
are stored as keyed hashes (HMAC), so a duplicate can be recognised without keeping the
identifier itself.
"""
