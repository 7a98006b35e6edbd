"""Everything that decides: decision, evolution and infrastructure agents."""
