"""The enricher's own telemetry, in Prometheus format (served at /metrics on the OTLP/HTTP port).

Each pipeline gets its own CollectorRegistry so that several can live in one process (tests, `agentmon up`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class EnricherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "agentmon_requests", "OTLP export requests by transport and outcome.", ["transport", "outcome"], registry=r
        )
        self.spans_received = Counter("agentmon_spans_received", "Spans accepted by the receivers.", registry=r)
        self.spans_stamped = Counter("agentmon_spans_stamped", "Spans stamped with an agent id.", registry=r)
        self.spans_passed_through = Counter(
            "agentmon_spans_passed_through", "Spans forwarded without an agent (no agent in their trace).", registry=r
        )
        self.spans_held = Gauge("agentmon_spans_held", "Spans held waiting for their trace's agent.", registry=r)
        self.spans_released_on_timeout = Counter(
            "agentmon_spans_released_on_timeout",
            "Held spans forwarded unstamped because their agent did not show up in time.",
            registry=r,
        )
        self.spans_evicted = Counter(
            "agentmon_spans_evicted",
            "Held spans released early (unstamped) because the hold buffer was full.",
            registry=r,
        )
        self.spans_carried_forward = Counter(
            "agentmon_spans_carried_forward",
            "Held spans written to the journal again, alone, so that the requests they came from could be "
            "committed (the journal was filling up).",
            registry=r,
        )
        self.spans_dropped = Counter("agentmon_spans_dropped", "Spans dropped on purpose.", ["reason"], registry=r)
        self.run_announcements = Counter(
            "agentmon_run_announcements",
            "Run announcements (spans with agentmon.announce from the registry API's trace/start): "
            "taught the attributor a run's agent, never forwarded or stored.",
            registry=r,
        )
        self.agent_id_conflicts = Counter(
            "agentmon_agent_id_conflicts",
            "Spans that already carried a different metadata.agent_id (kept, not overwritten).",
            registry=r,
        )
        self.spans_forwarded = Counter(
            "agentmon_spans_forwarded", "Spans delivered downstream.", ["sink"], registry=r
        )
        self.spans_failed = Counter(
            "agentmon_spans_failed", "Spans the downstream rejected permanently.", ["sink"], registry=r
        )
        self.export_retries = Counter(
            "agentmon_export_retries", "Downstream export attempts that will be retried.", ["sink"], registry=r
        )
        self.queue_depth = Gauge("agentmon_queue_depth", "Items waiting in each queue.", ["queue"], registry=r)
        self.agents_created = Counter("agentmon_agents_created", "Registry rows created by the enricher.", registry=r)
        self.registry_errors = Counter(
            "agentmon_registry_errors", "Failed registry operations (retried later).", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
