"""Agent runs reported through the API by agents that cannot speak OTLP (no web framework here).

``RunService`` keeps the open runs (``table``), builds their spans (``spans``) and sends
them to the enricher over OTLP/gRPC (``exporter``); ``registry_api.routes.runs`` is its
HTTP face.
"""

from registry_api.runs.exporter import EnricherRejected, EnricherUnavailable, OtlpRunExporter
from registry_api.runs.service import EndedRun, RunService, StartedRun
from registry_api.runs.spans import RunAgent
from registry_api.runs.table import RunBusy, RunClosed, RunError, RunNotFound, RunOfAnotherAgent, TooManyRuns

__all__ = [
    "EndedRun",
    "EnricherRejected",
    "EnricherUnavailable",
    "OtlpRunExporter",
    "RunAgent",
    "RunBusy",
    "RunClosed",
    "RunError",
    "RunNotFound",
    "RunOfAnotherAgent",
    "RunService",
    "StartedRun",
    "TooManyRuns",
]
