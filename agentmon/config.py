"""All of agentmon's configuration, read in one place.

Every setting comes from (highest precedence first) a command-line flag, an
``AGENTMON_*`` environment variable, or the default below. Components receive a
``Settings`` object; nothing else in the code base reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTMON_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path("./data"),
        description="Directory for embedded state: the SQLite registry, chDB data, queues.",
    )
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the agent registry; default an SQLite file in the data dir. "
        "MariaDB: mysql+pymysql://user:password@host:3306/db",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every write to the registry API needs it (X-API-Key or Authorization: Bearer).",
    )
    host: str = Field(default="127.0.0.1", description="Address the servers bind to.")
    api_port: int = Field(default=8000, ge=0, le=65535, description="Port of the registry API.")
    last_used_flush_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="How often the batched agents.last_used_at updates are written.",
    )
    log_level: str = Field(default="info", description="Log level: debug, info, warning, error.")

    # ---- enricher: receiving ----------------------------------------------------
    grpc_port: int = Field(default=4317, ge=0, le=65535, description="OTLP/gRPC receiver port.")
    http_port: int = Field(default=4318, ge=0, le=65535, description="OTLP/HTTP receiver port.")
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request accepted (after decompression); larger ones are refused.",
    )
    journal_max_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Disk budget of the ingest journal; when full, receivers answer "
        "RESOURCE_EXHAUSTED / 429 so that clients retry.",
    )

    # ---- enricher: identifying and attributing ----------------------------------
    rules_file: Path | None = Field(
        default=None, description="YAML file of identity rules that add to or override the built-in ones."
    )
    hold_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="How long spans of a trace whose agent is not yet known are held before they are "
        "forwarded unstamped.",
    )
    hold_max_spans: int = Field(
        default=200_000, ge=100, description="Most spans held at once; beyond it the oldest are released."
    )
    drop_unmonitored: bool = Field(
        default=True,
        description="Drop the spans of agents whose monitoring is off or whose status is inactive.",
    )
    registry_refresh_seconds: float = Field(
        default=2.0, gt=0, le=300, description="How often the enricher re-reads the registry (monitoring switches)."
    )

    # ---- enricher: forwarding ----------------------------------------------------
    otlp_forward_endpoint: str | None = Field(
        default=None,
        description="The downstream collector (the stock otelcol-contrib): host:port for OTLP/gRPC; "
        "host:port or a URL for OTLP/HTTP (a URL without a path gets /v1/traces).",
    )
    otlp_forward_protocol: Literal["grpc", "http/protobuf"] = Field(
        default="grpc",
        description="grpc, or http/protobuf: with gzip, http/protobuf costs about a tenth of the CPU "
        "(docs/PERFORMANCE.md).",
    )
    otlp_forward_insecure: bool = Field(default=True, description="Forward without TLS.")
    otlp_forward_compression: Literal["gzip", "none"] = Field(default="gzip", description="gzip or none.")
    otlp_forward_timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    # ---- storage and stats -----------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None,
        description="Where spans are stored and stats read: http(s)://user:pw@host:8123 for a ClickHouse "
        "server, chdb://PATH for embedded chDB. `agentmon up` defaults to chdb://DATA_DIR/chdb.",
    )
    clickhouse_database: str = Field(default="otel", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_table: str = Field(default="otel_traces", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_batch_spans: int = Field(default=20_000, ge=1, description="Most spans in one insert.")
    clickhouse_flush_seconds: float = Field(
        default=0.5, gt=0, le=60, description="Longest a span waits for its batch to fill before the insert."
    )
    prices_file: Path | None = Field(
        default=None, description="YAML model price table replacing the shipped one (USD per 1M tokens)."
    )

    # ---- registry API: runs reported by agents that cannot speak OTLP -------------------
    runs_otlp_endpoint: str | None = Field(
        default=None,
        description="host:port of the enricher's OTLP/gRPC receiver that /agents/{id}/trace/start and /end "
        "send their spans to; default the local enricher (127.0.0.1:GRPC_PORT).",
    )
    run_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400,
        description="A run not ended within this is closed as an error span by the API.",
    )
    runs_max_open: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Most runs open at once through the API; beyond it trace/start answers 429.",
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_means_none(cls, value: Any) -> Any:
        # An empty AGENTMON_API_KEY= in a compose file means "no key", not "the empty key".
        return None if value in ("", None) else value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("log_level must be one of debug, info, warning, error, critical")
        return value

    @model_validator(mode="after")
    def _journal_holds_requests(self) -> Settings:
        # A request the journal could never hold would be refused forever, not pushed back.
        if self.journal_max_bytes < 2 * self.max_request_bytes:
            raise ValueError("journal_max_bytes must be at least twice max_request_bytes")
        return self

    @property
    def registry_database_url(self) -> str:
        if self.registry_url:
            return self.registry_url
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def runs_otlp_target(self) -> str:
        """Where run spans go: the configured endpoint, else this machine's enricher."""
        if self.runs_otlp_endpoint:
            return self.runs_otlp_endpoint
        host = self.host if self.host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.grpc_port}"

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (e.g. CLI flags) taking precedence.

    ``None`` overrides are ignored so that an unset flag falls back to the environment.
    """
    return Settings(**{key: value for key, value in overrides.items() if value is not None})
