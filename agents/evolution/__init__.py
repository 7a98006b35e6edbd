"""Evolution agents: RL, black-box search and the LLM designer over decision agents."""
