"""Infrastructure agents: the knowledge store, scheduling and conflict resolution."""
