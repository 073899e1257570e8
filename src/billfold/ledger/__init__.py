"""The double-entry ledger (docs/ledger.md, decision 0039): accounts in one unit each,
transfers between two accounts of the same unit, idempotent by their client-supplied ids,
linked batches, two-phase (pending) transfers, and `verify`, which recomputes every
balance from the append-only transfers."""
