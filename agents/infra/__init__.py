"""Infrastructure agents: the interaction log (``agents.infra.log``) and the knowledge store (``agents.infra.store``).

The store is imported from its module (``from agents.infra.store import KnowledgeStore``) so that code
which only needs the log does not load SQLAlchemy and pandas.
"""
