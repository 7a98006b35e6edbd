"""Infrastructure agents: the knowledge store (``agents.infra.store``); the interaction log is ``envs.log``.

The store is imported from its module (``from agents.infra.store import KnowledgeStore``) so that code
which only needs the log does not load SQLAlchemy and pandas.
"""
