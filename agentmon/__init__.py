"""agentmon: agent monitoring on OpenTelemetry."""

__version__ = "0.1.0"
