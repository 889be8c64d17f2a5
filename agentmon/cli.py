"""The ``agentmon`` command: ``up``, ``api``, ``migrate`` (and ``enricher``).

Flags override ``AGENTMON_*`` environment variables, which override defaults; the
merge happens in ``agentmon.config.load_settings`` and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from agentmon.config import Settings, load_settings

log = logging.getLogger("agentmon")


def _common_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory for embedded state (SQLite registry, chDB, queues) [AGENTMON_DATA_DIR, default ./data]",
    )
    parent.add_argument(
        "--registry-url",
        metavar="URL",
        help="SQLAlchemy URL of the registry, e.g. mysql+pymysql://user:pw@host:3306/agentmon "
        "[AGENTMON_REGISTRY_URL, default sqlite:///DATA_DIR/registry.db]",
    )
    parent.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level [AGENTMON_LOG_LEVEL, default info]",
    )
    return parent


def _server_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--host", help="address to bind [AGENTMON_HOST, default 127.0.0.1; 0.0.0.0 for all]")
    return parent


def _api_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--port", "--api-port", dest="api_port", type=int, help="registry API port [AGENTMON_API_PORT, default 8000]"
    )
    return parent


def _enricher_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--grpc-port", type=int, help="OTLP/gRPC receiver port [AGENTMON_GRPC_PORT, default 4317]")
    parent.add_argument(
        "--http-port", type=int, help="OTLP/HTTP receiver port, also /metrics [AGENTMON_HTTP_PORT, default 4318]"
    )
    parent.add_argument(
        "--forward-otlp",
        dest="otlp_forward_endpoint",
        metavar="HOST:PORT",
        help="downstream collector to forward stamped spans to [AGENTMON_OTLP_FORWARD_ENDPOINT]",
    )
    parent.add_argument(
        "--forward-protocol",
        dest="otlp_forward_protocol",
        choices=("grpc", "http/protobuf"),
        help="OTLP protocol of --forward-otlp [AGENTMON_OTLP_FORWARD_PROTOCOL, default grpc]",
    )
    parent.add_argument(
        "--clickhouse-url",
        metavar="URL",
        help="store spans in ClickHouse: http(s)://user:pw@host:8123 or chdb://PATH (embedded) "
        "[AGENTMON_CLICKHOUSE_URL; `up` defaults to chdb://DATA_DIR/chdb]",
    )
    parent.add_argument(
        "--rules-file",
        metavar="FILE",
        help="YAML identity rules added before the built-in ones [AGENTMON_RULES_FILE]",
    )
    parent.add_argument(
        "--hold-seconds",
        type=float,
        help="how long spans wait for their trace's agent before going on unstamped "
        "[AGENTMON_HOLD_SECONDS, default 10]",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentmon",
        description="Agent monitoring on OpenTelemetry. Every flag can also be set as an AGENTMON_* "
        "environment variable; the API key only as AGENTMON_API_KEY (keep secrets out of process lists).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common, server, api, enricher = _common_flags(), _server_flags(), _api_flags(), _enricher_flags()

    up = sub.add_parser(
        "up",
        parents=[common, server, api, enricher],
        help="run everything on embedded defaults in one process",
        description="Apply the registry migrations, then run the registry API and, when it has somewhere "
        "to send spans (--forward-otlp), the enricher, all in one process, with the SQLite registry and "
        "data under --data-dir unless configured otherwise.",
    )
    up.set_defaults(run=_run_up)

    enricher_cmd = sub.add_parser(
        "enricher",
        parents=[common, server, enricher],
        help="run the OTLP enricher",
        description="Receive OTLP traces (gRPC and HTTP), attribute every span to its agent, stamp "
        "metadata.agent_id/agent_name/agent_type, and forward the spans. Does not migrate: run "
        "`agentmon migrate` first.",
    )
    enricher_cmd.set_defaults(run=_run_enricher)

    api_cmd = sub.add_parser(
        "api",
        parents=[common, server, api],
        help="run the registry API",
        description="Serve the registry API (OpenAPI at /docs). Does not migrate: run `agentmon migrate` first.",
    )
    api_cmd.set_defaults(run=_run_api)

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="create or upgrade the registry schema",
        description="Apply the Alembic migrations in migrations/ to the registry database.",
    )
    migrate.set_defaults(run=_run_migrate)
    return parser


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value for key, value in vars(args).items() if key in Settings.model_fields and value is not None
    }
    return load_settings(**overrides)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _run_migrate(settings: Settings) -> int:
    from registry_api.store.migrate import upgrade_registry

    upgrade_registry(settings.registry_database_url)
    log.info("registry schema is up to date")
    return 0


def _serve_api(settings: Settings) -> int:
    import uvicorn

    from registry_api.app import create_app

    app = create_app(settings)
    log.info("registry API on http://%s:%d (OpenAPI at /docs)", settings.host, settings.api_port)
    # The dashboard's live streams never end by themselves: cut them 3 s into a shutdown.
    uvicorn.run(app, host=settings.host, port=settings.api_port, log_level=settings.log_level,
                timeout_graceful_shutdown=3)
    return 0


def _run_api(settings: Settings) -> int:
    return _serve_api(settings)


def _start_enricher(settings: Settings):
    from enricher.service import Enricher

    enricher = Enricher(settings)
    enricher.start()
    _tune_gc()
    return enricher


def _tune_gc() -> None:
    """The enricher keeps many small, long-lived objects (each trace's parents, held spans)
    and none of them form reference cycles, yet with the default thresholds the collector
    re-scans them again and again: measured, 10-15% of the pipeline's time. Young objects
    are collected less often, and what start-up allocated (modules, the ORM's metadata)
    is left out of full collections. Memory is still freed by reference counting at once."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _run_enricher(settings: Settings) -> int:
    import signal
    import threading

    from enricher.service import NoSinkConfigured

    try:
        enricher = _start_enricher(settings)
    except NoSinkConfigured as error:
        log.error("%s", error)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    log.info("stopping the enricher")
    enricher.stop()
    return 0


def _run_up(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.clickhouse_url:
        # Embedded defaults: spans go to chDB under the data dir. chDB opens a directory
        # from one process only, which is why `up` runs everything in this one.
        chdb_dir = (settings.data_dir / "chdb").resolve()
        settings = settings.model_copy(update={"clickhouse_url": f"chdb://{chdb_dir}"})
    _run_migrate(settings)
    enricher = _start_enricher(settings)
    if not settings.runs_otlp_endpoint:
        # Runs reported over HTTP go to this process's own receiver, wherever it bound (port 0 too).
        settings = settings.model_copy(update={"runs_otlp_endpoint": f"127.0.0.1:{enricher.grpc_port}"})
    try:
        return _serve_api(settings)
    finally:
        enricher.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings_from(args)
    except ValidationError as error:
        parser.exit(2, f"agentmon: invalid configuration:\n{error}\n")
    _configure_logging(settings)
    run: Callable[[Settings], int] = args.run
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
