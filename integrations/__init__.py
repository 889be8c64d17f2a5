"""Ready-made integrations that put agents of common frameworks into agentmon by themselves."""
