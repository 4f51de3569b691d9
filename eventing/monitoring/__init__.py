"""Seeing the bus work: its status (streams, groups, dead letters, outbox), readiness, metrics and tracing."""
