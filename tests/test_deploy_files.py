"""Static checks of the deployment files: docker-compose.yml, otelcol-config.yaml, Dockerfile.

No Docker engine is needed: the files are parsed and cross-checked against each other and against
the code (``agentmon.config.Settings`` defaults, ``agentmon.cli.build_parser()`` subcommands,
``pyproject.toml``). ``docker compose config`` runs only when a Compose v2 client is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from agentmon.cli import build_parser
from agentmon.config import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
COLLECTOR_FILE = REPO / "otelcol-config.yaml"
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = REPO / "pyproject.toml"

# Where the stock ClickHouse exporter writes and agentmon reads.
# TODO: take these from the code once it defines them (the DDL in clickhouse/ or Settings fields);
# until then they are hard-coded here, and compared with Settings when such fields appear.
CLICKHOUSE_DATABASE = "otel"
CLICKHOUSE_TRACES_TABLE = "otel_traces"
_SETTINGS_DATABASE_FIELDS = ("clickhouse_database", "clickhouse_db")
_SETTINGS_TRACES_TABLE_FIELDS = ("clickhouse_traces_table", "clickhouse_table", "traces_table")

COLLECTOR_SERVICE = "otelcol"
HEALTHCHECKED_SERVICES = ("mariadb", "clickhouse", "enricher", "api")


# ---- helpers -------------------------------------------------------------------------------


def _load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{path.name} must be a YAML mapping"
    return document


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load_yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return _load_yaml(COLLECTOR_FILE)


_COMPOSE_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose interpolation with every variable unset: ``${X:-default}`` becomes ``default``."""

    def replace(match: re.Match[str]) -> str:
        op = match.group("op") or ""
        if op.endswith("-"):
            return match.group("arg")
        if op.endswith("?"):
            raise AssertionError(f"{match.group(0)} requires a variable to be set")
        return ""

    return _COMPOSE_VARIABLE.sub(replace, value).replace("$$", "$")


_COLLECTOR_ENV = re.compile(r"\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


def _collector_default(value: str) -> str:
    """The value of a collector setting when its ``${env:NAME:-default}`` variables are unset."""
    return _COLLECTOR_ENV.sub(lambda match: match.group("default") or "", value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def _flag_value(command: list[str], flag: str) -> str | None:
    for index, part in enumerate(command):
        if part == flag and index + 1 < len(command):
            return command[index + 1]
        if part.startswith(flag + "="):
            return part.split("=", 1)[1]
    return None


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return {name: "service_started" for name in depends}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in depends.items()}


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
        else:
            spec = str(entry).split("/", 1)[0]  # drop /tcp, /udp
            ports.add(int(spec.rsplit(":", 1)[-1]))
    return ports


def _published_host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, for "HOST:CONTAINER" style entries."""
    published: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if "published" in entry:
                published[int(entry["target"])] = int(entry["published"])
            continue
        parts = str(entry).split("/", 1)[0].split(":")
        if len(parts) >= 2:
            published[int(parts[-1])] = int(parts[-2])
    return published


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def _is_agentmon_service(service: dict[str, Any]) -> bool:
    """Services built from this repository's Dockerfile run the `agentmon` entrypoint."""
    return "build" in service


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("agentmon's parser has no subcommands")


def _healthcheck_url(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    text = " ".join(test) if isinstance(test, list) else str(test)
    match = re.search(r"https?://[^\s'\"]+", text)
    assert match, f"no URL in healthcheck {test!r}"
    return match.group(0)


def _settings_default(name: str) -> Any:
    return Settings.model_fields[name].default


# ---- both files parse ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, COLLECTOR_FILE], ids=lambda path: path.name)
def test_yaml_files_parse(path: Path) -> None:
    assert path.is_file(), f"{path.name} is missing"
    assert _load_yaml(path)


# ---- otelcol-config.yaml -------------------------------------------------------------------


def test_collector_receives_otlp_grpc_on_all_interfaces_port_4317(collector: dict[str, Any]) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    # Not the default localhost: the enricher reaches the collector over the compose network.
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_collector_writes_the_table_agentmon_reads(collector: dict[str, Any]) -> None:
    exporter = collector["exporters"]["clickhouse"]
    assert exporter["database"] == CLICKHOUSE_DATABASE
    assert exporter["traces_table_name"] == CLICKHOUSE_TRACES_TABLE
    for names, expected in (
        (_SETTINGS_DATABASE_FIELDS, CLICKHOUSE_DATABASE),
        (_SETTINGS_TRACES_TABLE_FIELDS, CLICKHOUSE_TRACES_TABLE),
    ):
        for name in names:
            if name in Settings.model_fields:
                assert _settings_default(name) == expected, f"Settings.{name} disagrees with the collector"


def test_collector_exporter_settings(collector: dict[str, Any]) -> None:
    exporter = collector["exporters"]["clickhouse"]
    for key in ("endpoint", "create_schema", "ttl", "timeout", "sending_queue", "retry_on_failure"):
        assert key in exporter, f"exporters.clickhouse.{key} is missing"
    endpoint = urlsplit(_collector_default(exporter["endpoint"]))
    assert endpoint.scheme in {"tcp", "clickhouse", "http", "https"}
    assert exporter["retry_on_failure"].get("enabled", True) is True


def test_collector_batches_in_the_sending_queue_not_with_the_batch_processor(collector: dict[str, Any]) -> None:
    traces = collector["service"]["pipelines"]["traces"]
    processor_types = [name.split("/", 1)[0] for name in traces.get("processors") or []]
    assert "batch" not in processor_types, (
        "use exporters.clickhouse.sending_queue.batch (the batch processor can lose data)"
    )

    queue = collector["exporters"]["clickhouse"]["sending_queue"]
    assert queue.get("enabled", True) is True
    batch = queue.get("batch")
    assert isinstance(batch, dict), "sending_queue.batch enables batching; without it every request is one INSERT"
    # The exporterhelper's own validation rules (queuebatch/config.go), checked before a deploy finds them.
    queue_sizer = queue.get("sizer", "requests")
    batch_sizer = batch.get("sizer", queue_sizer if "sizer" in queue else "items")
    assert batch_sizer in {"items", "bytes"}, "sending_queue.batch supports only the items or bytes sizer"
    assert batch.get("flush_timeout"), "flush_timeout must be positive"
    if batch_sizer == queue_sizer and "queue_size" in queue:
        assert batch.get("min_size", 8192) <= queue["queue_size"], "min_size must be <= queue_size"
    if batch.get("max_size"):
        assert batch["max_size"] >= batch.get("min_size", 8192)


def test_collector_memory_limiter_comes_first(collector: dict[str, Any]) -> None:
    for name, pipeline in collector["service"]["pipelines"].items():
        processors = pipeline.get("processors") or []
        limiters = [index for index, processor in enumerate(processors) if processor.split("/")[0] == "memory_limiter"]
        assert limiters in ([], [0]), f"pipeline {name}: memory_limiter must be the first processor"


def test_collector_pipelines_reference_defined_components_and_vice_versa(collector: dict[str, Any]) -> None:
    service = collector["service"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in service["pipelines"].items():
        assert pipeline.get("receivers"), f"pipeline {name} has no receivers"
        assert pipeline.get("exporters"), f"pipeline {name} has no exporters"
        for kind in used:
            used[kind].update(pipeline.get(kind) or [])
    used_extensions = set(service.get("extensions") or [])

    for kind, names in [*used.items(), ("extensions", used_extensions)]:
        defined = set(collector.get(kind) or {})
        assert names <= defined, f"{kind} used in service but not defined: {sorted(names - defined)}"
        assert defined <= names, f"{kind} defined but never used (silently ignored): {sorted(defined - names)}"


def test_collector_traces_pipeline_is_otlp_to_clickhouse(collector: dict[str, Any]) -> None:
    traces = collector["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert traces["exporters"] == ["clickhouse"]


def test_collector_health_check_is_reachable_from_outside_the_container(
    collector: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    endpoint = collector["extensions"]["health_check"]["endpoint"]
    host, port = _host_port(endpoint)
    assert (host, port) == ("0.0.0.0", 13133)
    assert port in _container_ports(services[COLLECTOR_SERVICE]), "publish the health_check port"


# ---- docker-compose.yml --------------------------------------------------------------------


def test_compose_depends_on_targets_exist(services: dict[str, dict[str, Any]]) -> None:
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        for target, condition in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition in allowed, f"{name}: unknown depends_on condition {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target} to be healthy, which has no healthcheck"
                )


def test_compose_healthchecks_present(services: dict[str, dict[str, Any]]) -> None:
    for name in HEALTHCHECKED_SERVICES:
        healthcheck = services[name].get("healthcheck")
        assert healthcheck and not healthcheck.get("disable"), f"{name} needs a healthcheck"
        assert healthcheck.get("test"), f"{name}: healthcheck without a test"
    mariadb_test = services["mariadb"]["healthcheck"]["test"]
    assert "healthcheck.sh" in mariadb_test and "--connect" in mariadb_test and "--innodb_initialized" in mariadb_test


def test_compose_collector_has_no_shell_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    # The contrib image is distroless: a CMD-SHELL (or any command) healthcheck would always fail.
    healthcheck = services[COLLECTOR_SERVICE].get("healthcheck")
    assert healthcheck is None or healthcheck.get("disable") is True


def test_compose_enricher_forwards_to_the_collectors_receiver_of_its_protocol(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    command = _command(services["enricher"])
    environment = _environment(services["enricher"])
    endpoint = _flag_value(command, "--forward-otlp") or environment.get("AGENTMON_OTLP_FORWARD_ENDPOINT")
    assert endpoint, "the enricher must forward to the collector (--forward-otlp)"
    protocol = _flag_value(command, "--forward-protocol") or environment.get(
        "AGENTMON_OTLP_FORWARD_PROTOCOL", _settings_default("otlp_forward_protocol")
    )
    assert protocol in ("grpc", "http/protobuf")
    host, port = _host_port(endpoint)
    assert host == COLLECTOR_SERVICE and host in services
    assert "opentelemetry-collector-contrib" in services[host]["image"]
    receiver = "grpc" if protocol == "grpc" else "http"
    _, receiver_port = _host_port(collector["receivers"]["otlp"]["protocols"][receiver]["endpoint"])
    assert port == receiver_port, f"{protocol} must go to the collector's {receiver} receiver"
    assert _depends_on(services["enricher"]).get(COLLECTOR_SERVICE) == "service_started"


def test_compose_agentmon_ports_equal_settings_defaults(services: dict[str, dict[str, Any]]) -> None:
    grpc_port, http_port, api_port = (_settings_default(name) for name in ("grpc_port", "http_port", "api_port"))
    enricher, api = services["enricher"], services["api"]
    # The commands keep the default ports, so the mappings must use them.
    for flag in ("--grpc-port", "--http-port"):
        assert _flag_value(_command(enricher), flag) is None, f"{flag} overrides the port the mapping assumes"
    assert _flag_value(_command(api), "--port") is None and _flag_value(_command(api), "--api-port") is None
    assert _container_ports(enricher) == {grpc_port, http_port}
    assert _container_ports(api) == {api_port}
    assert _published_host_ports(enricher) == {grpc_port: grpc_port, http_port: http_port}
    assert _published_host_ports(api) == {api_port: api_port}
    # ... and so must the healthchecks.
    assert urlsplit(_healthcheck_url(enricher)).port == http_port
    assert urlsplit(_healthcheck_url(enricher)).path == "/metrics"
    assert urlsplit(_healthcheck_url(api)).port == api_port
    assert urlsplit(_healthcheck_url(api)).path == "/healthz"


def test_compose_servers_bind_all_interfaces(services: dict[str, dict[str, Any]]) -> None:
    # Settings.host defaults to 127.0.0.1, unreachable through a published port.
    for name in ("enricher", "api"):
        service = services[name]
        host = _flag_value(_command(service), "--host") or _environment(service).get("AGENTMON_HOST")
        assert host == "0.0.0.0", f"{name} must bind 0.0.0.0 inside its container"


def test_compose_bind_mounts_exist_in_the_repo(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (REPO / source).resolve().exists(), f"{name} mounts {source}, which is not in the repo"


def test_compose_collector_loads_the_mounted_config(services: dict[str, dict[str, Any]]) -> None:
    service = services[COLLECTOR_SERVICE]
    mounts = {}
    for volume in service["volumes"]:
        source, target = str(volume).split(":")[:2]
        mounts[target] = source
    config_path = _flag_value(_command(service), "--config")
    assert config_path, "pass --config explicitly"
    assert config_path in mounts, f"{config_path} is not mounted"
    assert (REPO / mounts[config_path]).resolve() == COLLECTOR_FILE
    assert _depends_on(service).get("clickhouse") == "service_healthy"


def test_compose_collector_environment_points_at_clickhouse(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    environment = _environment(services[COLLECTOR_SERVICE])
    exporter = collector["exporters"]["clickhouse"]
    # Every ${env:NAME} without a default must be set, or the collector gets an empty value.
    text = COLLECTOR_FILE.read_text(encoding="utf-8")
    for match in _COLLECTOR_ENV.finditer(text):
        if match.group("default") is None:
            assert match.group("name") in environment, f"otelcol needs {match.group('name')} in its environment"
    for endpoint in (
        _collector_default(exporter["endpoint"]),
        _interpolate(environment.get("CLICKHOUSE_ENDPOINT", _collector_default(exporter["endpoint"]))),
    ):
        url = urlsplit(endpoint)
        assert url.hostname == "clickhouse" and "clickhouse" in services
        assert url.port == (9000 if url.scheme in {"tcp", "clickhouse"} else 8123)
    # The exporter logs in as the user the ClickHouse container creates.
    clickhouse_env = _environment(services["clickhouse"])
    if "CLICKHOUSE_USER" in clickhouse_env:
        assert environment.get("CLICKHOUSE_USERNAME") == clickhouse_env["CLICKHOUSE_USER"]
        assert _interpolate(environment.get("CLICKHOUSE_PASSWORD", "")) == _interpolate(
            clickhouse_env.get("CLICKHOUSE_PASSWORD", "")
        )


def test_compose_registry_url_matches_the_mariadb_service(services: dict[str, dict[str, Any]]) -> None:
    mariadb = {key: _interpolate(value) for key, value in _environment(services["mariadb"]).items()}
    for name, service in services.items():
        if not _is_agentmon_service(service):
            continue
        url = urlsplit(_interpolate(_environment(service)["AGENTMON_REGISTRY_URL"]))
        assert url.scheme == "mysql+pymysql"
        assert url.hostname == "mariadb" and url.port == 3306
        assert url.path.lstrip("/") == mariadb["MARIADB_DATABASE"]
        assert url.username == mariadb["MARIADB_USER"]
        assert url.password == mariadb["MARIADB_PASSWORD"]
        assert _depends_on(service).get("mariadb") == "service_healthy" or _depends_on(service).get("migrate") == (
            "service_completed_successfully"
        ), f"{name} must start after the registry is ready"


def test_compose_agentmon_environment_names_are_settings(services: dict[str, dict[str, Any]]) -> None:
    # Settings ignores unknown AGENTMON_* variables: a typo would silently fall back to a default.
    for name, service in services.items():
        if not _is_agentmon_service(service):
            continue
        for variable in _environment(service):
            if variable.startswith("AGENTMON_"):
                field = variable.removeprefix("AGENTMON_").lower()
                assert field in Settings.model_fields, f"{name}: {variable} is not an agentmon setting"


def test_compose_migrate_runs_once_before_the_servers(services: dict[str, dict[str, Any]]) -> None:
    assert _command(services["migrate"])[:1] == ["migrate"]
    assert str(services["migrate"].get("restart", "no")) == "no"
    assert _depends_on(services["migrate"]).get("mariadb") == "service_healthy"
    for name in ("enricher", "api"):
        assert _depends_on(services[name]).get("migrate") == "service_completed_successfully"


def test_compose_commands_are_agentmon_subcommands(services: dict[str, dict[str, Any]]) -> None:
    subcommands = _subcommands()
    commands = {name: _command(service) for name, service in services.items() if _is_agentmon_service(service)}
    assert {command[0] for command in commands.values()} == {"migrate", "enricher", "api"}

    pending: list[str] = []
    for name, command in commands.items():
        if command[0] not in subcommands:
            pending.append(command[0])
            continue
        # The whole command line must parse: subcommand and every flag.
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            try:
                build_parser().parse_args(command)
            except SystemExit:
                pytest.fail(f"{name}: `agentmon {' '.join(command)}` does not parse: {stderr.getvalue()}")

    assert not pending, f"commands missing from agentmon.cli: {pending}"


def test_compose_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        image = service.get("image")
        if image is None:
            continue
        reference = image.split("@", 1)[0]
        repository, _, tag = reference.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned to a version"


def test_compose_clickhouse_ulimits_and_volumes(services: dict[str, dict[str, Any]]) -> None:
    clickhouse = services["clickhouse"]
    nofile = clickhouse["ulimits"]["nofile"]
    assert (nofile["soft"] if isinstance(nofile, dict) else nofile) >= 262144
    assert any(str(volume).endswith(":/var/lib/clickhouse") for volume in clickhouse["volumes"])
    assert any(str(volume).endswith(":/var/lib/mysql") for volume in services["mariadb"]["volumes"])


# ---- Dockerfile ----------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    instructions = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_a_non_root_agentmon_image() -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(keyword == "RUN" and re.search(r"pip install (--\S+ )*\.(\s|$)", rest) for keyword, rest in instructions)
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    assert ("ENTRYPOINT", '["agentmon"]') in instructions
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")


def test_dockerfile_copies_every_package() -> None:
    includes = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").rstrip(".") for pattern in includes}
    copied = set()
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY":
            sources = [part for part in rest.split()[:-1] if not part.startswith("--")]
            copied.update(part.rstrip("/").removeprefix("./") for part in sources)
    assert packages <= copied, f"packages not copied into the image: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied


def test_installed_packages_include_their_data_files() -> None:
    """`pip install .` (the Dockerfile) ships only .py files plus declared package-data."""
    setuptools = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]
    package_data: dict[str, list[str]] = setuptools.get("package-data", {})
    top_level = {pattern.rstrip("*").rstrip(".") for pattern in setuptools["packages"]["find"]["include"]}
    # C extensions: their sources are compiled into the install, and their builds are local.
    extension_sources = {source for module in setuptools.get("ext-modules", []) for source in module["sources"]}
    assert all((REPO / source).is_file() for source in extension_sources)
    missing = []
    for top in sorted(top_level):
        for path in sorted((REPO / top).rglob("*")):
            if not path.is_file() or path.suffix in {".py", ".pyc", ".so"} or "__pycache__" in path.parts:
                continue
            if path.relative_to(REPO).as_posix() in extension_sources:
                continue
            relative = path.relative_to(REPO)
            covered = False
            for package, patterns in package_data.items():
                package_dir = REPO / package.replace(".", "/") if package != "*" else None
                for pattern in patterns:
                    if package_dir is None:
                        covered |= fnmatch.fnmatch(path.name, pattern)
                    elif path.is_relative_to(package_dir):
                        covered |= fnmatch.fnmatch(path.relative_to(package_dir).as_posix(), pattern)
            if not covered:
                missing.append(relative.as_posix())
    assert not missing, f"not installed by `pip install .` (add them to package-data): {missing}"
