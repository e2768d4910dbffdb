"""The event journal: an append-only log of every step, and projections kept beside it."""
