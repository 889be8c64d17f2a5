"""Alembic migrations of the agent registry (applied by ``agentmon migrate``)."""
