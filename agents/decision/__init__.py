"""Decision agents: recall, fusion, ranking, re-ranking, routing (see issue: decision layer)."""
