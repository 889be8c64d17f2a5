"""Failure tests: the enricher as a real process under load while its surroundings fail.

Each test runs ``agentmon enricher`` as a subprocess (tests/support/enricher_process.py)
behind a load client that tracks which Export requests were acknowledged
(tests/support/load_client.py) and in front of a real test OTLP collector. The claim
tested everywhere is the README's: every span of every acknowledged request reaches the
collector at least once, and overload is pushed back to clients instead of buffered.

1. The collector is down for 30 s: clients are told to retry (RESOURCE_EXHAUSTED with
   RetryInfo) once the small journal is full, the enricher's memory stays bounded, and
   nothing acknowledged is lost when the collector returns.
2. MariaDB is down (a TCP proxy in front of it drops connections and refuses new ones):
   new agents' spans are still stamped with their deterministic ids and delivered, and
   their registry rows appear once the database is back.
3. ``kill -9`` of the enricher under load, twice, each time restarted on the same data dir:
   nothing acknowledged is lost (duplicates are allowed and reported).
4. ``kill -9`` with a full journal while the collector is down, a restart, a graceful stop
   (SIGTERM) with undeliverable spans and another restart: the journal's budget holds
   across restarts and nothing acknowledged is lost once the collector is back.
5. Spans held for agents that never show up, under load, with a journal that holds far less
   than the hold time's ingest: they are carried forward, so clients are not pushed back,
   and after a ``kill -9`` every acknowledged span still arrives, the held ones included.

The figures each test measured are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from registry_api.store.identity import AgentIdentity
from tests.support.enricher_process import EnricherProcess, RssSampler, migrate
from tests.support.load_client import LoadClient, received_span_ids, wait_for_delivery, wait_for_spans
from tests.support.otlp_http_sink import OtlpHttpTestSink
from tests.support.otlp_sink import OtlpTestSink
from tests.support.tcp_proxy import TcpProxy

MiB = 1024 * 1024


def _report(name: str, figures: dict) -> None:
    print(f"\n[reliability] {name}: {json.dumps(figures, sort_keys=True, default=str)}")


def _sqlite_env(data_dir: Path) -> dict[str, str]:
    url = f"sqlite:///{data_dir / 'registry.db'}"
    migrate(url, data_dir)
    return {"AGENTMON_REGISTRY_URL": url}


def _stamp(span, key: str = "metadata.agent_id") -> str | None:
    for kv in span.attributes:
        if kv.key == key:
            return kv.value.string_value
    return None


# ---- 1. the downstream collector is down ---------------------------------------------------

JOURNAL_MAX_BYTES = 4 * MiB
MAX_REQUEST_BYTES = 1 * MiB  # the journal must hold at least two of the largest requests
OUTAGE_SECONDS = 30.0
# The enricher's resident memory may grow by at most this much over its steady state while
# the collector is down: the journal (4 MiB of requests) bounds what it holds.
RSS_GROWTH_BOUND = 64 * MiB
# ... and must not keep growing as the outage goes on (second half versus first half).
RSS_DRIFT_BOUND = 8 * MiB


# The enricher forwards over either protocol (docker-compose.yml uses OTLP/HTTP).
FORWARDING = {"grpc": OtlpTestSink, "http/protobuf": OtlpHttpTestSink}


@pytest.mark.parametrize("protocol", FORWARDING)
def test_collector_outage_pushes_back_with_bounded_memory_and_loses_nothing(tmp_path: Path, protocol: str) -> None:
    data_dir = tmp_path / "data"
    env = _sqlite_env(data_dir) | {
        "AGENTMON_JOURNAL_MAX_BYTES": str(JOURNAL_MAX_BYTES),
        "AGENTMON_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "AGENTMON_HOLD_SECONDS": "2",
        "AGENTMON_OTLP_FORWARD_PROTOCOL": protocol,
    }
    with FORWARDING[protocol]() as sink, EnricherProcess(data_dir, forward=sink.endpoint, env=env) as enricher:
        startup = enricher.start()
        # SDK-sized requests (the BatchSpanProcessor's 512 spans, about 200 KB): the 4 MiB
        # journal holds some 20 of them, so it is what fills up first.
        load = LoadClient(enricher.endpoint, senders=2, spans_per_request=512, interval=0.25)
        with RssSampler(enricher) as rss, load:
            time.sleep(6)  # steady state
            steady_end = time.monotonic()
            steady_rss = max(rss.between(steady_end - 4, steady_end))
            assert sink.span_count() > 0, enricher.log_tail()
            acked_before = len(load.acked)

            sink.stop()
            down_at = time.monotonic()
            time.sleep(OUTAGE_SECONDS)
            sink.start()  # the same port
            up_at = time.monotonic()
            received_at_restart = sink.request_count()
            # The forwarder notices at its next retry: its backoff, like gRPC's reconnect
            # backoff, is capped at 30 s, so this can take up to about twice that.
            assert sink.wait_for_requests(received_at_restart + 1, timeout=75), enricher.log_tail()
            first_delivery = time.monotonic() - up_at
            # Clients get through again once the journal drains.
            while not load.acked_between(up_at, time.monotonic()) and time.monotonic() - up_at < 90:
                time.sleep(0.1)
            first_ack_after = time.monotonic() - up_at
            time.sleep(3)
            metrics_during = enricher.metrics()
            load.stop(drain_timeout=30)
        missing, drain_wait = wait_for_delivery(load, sink, timeout=60)
        received = received_span_ids(sink)

    summary = load.summary()
    outage_refusals = load.refusals_between(down_at, up_at)
    exhausted = [r for r in outage_refusals if r.code == "RESOURCE_EXHAUSTED"]
    acked_in_outage = load.acked_between(down_at, up_at)
    last_ack_in_outage = max((a.at for a in acked_in_outage), default=down_at) - down_at
    # The samples from when the journal was full (clients were pushed back) to the end.
    full_at = min((r.at for r in exhausted), default=down_at)
    outage_rss = rss.between(full_at, up_at)
    mid = full_at + (up_at - full_at) / 2
    first_half, second_half = rss.between(full_at, mid), rss.between(mid, up_at)
    acked_ids = load.acked_span_ids()
    figures = {
        **summary,
        "startup_s": round(startup, 2),
        "acked_requests_before_outage": acked_before,
        "acked_requests_during_outage": len(acked_in_outage),
        "acked_bytes_during_outage": sum(a.size for a in acked_in_outage),
        "last_ack_during_outage_s_after_down": round(last_ack_in_outage, 2),
        "journal_full_s_after_down": round(full_at - down_at, 2),
        "refusals_during_outage": dict(Counter(r.code for r in outage_refusals)),
        "retry_delays_s": sorted({r.retry_delay for r in exhausted}),
        "refusal_reasons": dict(Counter(r.message.split(";")[0] for r in outage_refusals)),
        "steady_rss_mib": round(steady_rss / MiB, 1),
        "max_rss_during_outage_mib": round(max(outage_rss, default=0) / MiB, 1),
        "max_rss_first_half_mib": round(max(first_half, default=0) / MiB, 1),
        "max_rss_second_half_mib": round(max(second_half, default=0) / MiB, 1),
        "rss_samples_during_outage": len(outage_rss),
        "first_delivery_after_collector_back_s": round(first_delivery, 2),
        "first_ack_after_collector_back_s": round(first_ack_after, 2),
        "requests_at_sink_before_restart": received_at_restart,
        "all_acked_delivered_after_load_stop_s": round(drain_wait, 2),
        "export_retries": metrics_during.get('agentmon_export_retries_total{sink="otlp"}'),
        "duplicates": sum(count - 1 for span_id, count in received.items() if span_id in acked_ids and count > 1),
        "missing": len(missing),
    }
    _report(f"collector outage ({protocol})", figures)

    assert not summary["errors"], summary
    assert not missing, f"{len(missing)} acknowledged spans never reached the collector: {figures}"
    # Pushed back, with a retry delay, once the journal was full...
    assert exhausted, f"no RESOURCE_EXHAUSTED during a {OUTAGE_SECONDS} s outage: {figures}"
    assert all(r.retry_delay is not None and r.retry_delay > 0 for r in exhausted), figures
    assert any("journal is full" in r.message for r in exhausted), figures
    # ... and not buffered beyond the journal: acknowledgements stopped once it was full.
    assert sum(a.size for a in acked_in_outage) <= JOURNAL_MAX_BYTES, figures
    assert last_ack_in_outage < OUTAGE_SECONDS / 2, figures
    # Memory bounded, and flat however long the outage lasts.
    assert first_half and second_half, figures
    assert max(outage_rss) <= steady_rss + RSS_GROWTH_BOUND, figures
    assert max(second_half) <= max(first_half) + RSS_DRIFT_BOUND, figures


# ---- 2. the registry database (MariaDB) is down ------------------------------------------------

REGISTRY_OUTAGE_SECONDS = 10.0


@pytest.fixture
def mariadb_fresh_database() -> Iterator[tuple[sa.Engine, str]]:
    """A new, empty database on the MariaDB server for one test (dropped afterwards), and a
    direct engine on it. Skips locally and fails in CI when MariaDB is unreachable."""
    from tests.conftest import MARIADB_ADMIN_URL, _mariadb_missing

    admin = sa.create_engine(MARIADB_ADMIN_URL, connect_args={"connect_timeout": 3})
    name = f"agentmon_rel_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as error:
        admin.dispose()
        _mariadb_missing(str(error.orig))
    direct = sa.create_engine(admin.url.set(database=name), connect_args={"connect_timeout": 3})
    yield direct, name
    direct.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def _registry_rows(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    """agent id -> (name, type), read straight from MariaDB (not through the proxy)."""
    with engine.connect() as conn:
        return {row.id: (row.name, row.type) for row in conn.execute(sa.text("SELECT id, name, type FROM agents"))}


def _stamps_by_agent(sink: OtlpTestSink) -> tuple[dict[str, str], Counter, list[str]]:
    """(agent span name -> its stamped id, spans stamped per id, inconsistencies): an LLM
    child stamped with an id other than its own trace's agent span's is an inconsistency."""
    spans = [span for _, _, span in sink.spans()]
    trace_agent: dict[bytes, str] = {}
    agent_ids: dict[str, str] = {}
    for span in spans:
        if span.name.startswith("invoke_agent "):
            stamp = _stamp(span)
            agent_ids[span.name.removeprefix("invoke_agent ")] = stamp
            trace_agent[span.trace_id] = stamp
    per_id: Counter = Counter()
    wrong = []
    for span in spans:
        stamp = _stamp(span)
        if stamp is not None:
            per_id[stamp] += 1
            expected = trace_agent.get(span.trace_id)
            if expected is not None and stamp != expected:
                wrong.append(f"{span.name} {span.span_id.hex()}: {stamp} != {expected}")
    return agent_ids, per_id, wrong


@pytest.mark.mariadb
def test_registry_outage_still_stamps_new_agents_and_creates_their_rows_later(
    tmp_path: Path, mariadb_fresh_database: tuple[sa.Engine, str]
) -> None:
    direct, database = mariadb_fresh_database
    target = direct.url
    known = ["known-agent-0", "known-agent-1"]
    new = [f"new-agent-{i}" for i in range(4)]
    ids = {name: AgentIdentity(name=name).agent_id for name in known + new}
    data_dir = tmp_path / "data"
    with TcpProxy(target.host or "127.0.0.1", target.port or 3306) as proxy:
        registry_url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        migrate(registry_url, data_dir)  # through the proxy, like everything the enricher does
        env = {"AGENTMON_REGISTRY_URL": registry_url, "AGENTMON_HOLD_SECONDS": "2"}
        with OtlpTestSink() as sink, EnricherProcess(data_dir, forward=sink.endpoint, env=env) as enricher:
            enricher.start()
            load = LoadClient(enricher.endpoint, senders=2, spans_per_request=100, interval=0.1, agents=known)
            with load:
                deadline = time.monotonic() + 30
                while not {ids[n] for n in known} <= _registry_rows(direct).keys() and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert {ids[n] for n in known} <= _registry_rows(direct).keys(), enricher.log_tail()

                proxy.down()  # connections reset, new ones refused
                down_at = time.monotonic()
                load.agents = known + new  # agents the registry has never seen
                # While it is down: every new agent's spans are stamped with its id and delivered.
                deadline = down_at + REGISTRY_OUTAGE_SECONDS
                stamped_while_down: dict[str, str] = {}
                while time.monotonic() < deadline:
                    stamped_while_down, _, _ = _stamps_by_agent(sink)
                    if set(new) <= stamped_while_down.keys():
                        break
                    time.sleep(0.5)
                all_new_stamped_after = time.monotonic() - down_at
                time.sleep(max(0.0, deadline - time.monotonic()))
                rows_while_down = _registry_rows(direct)
                acked_while_down = load.acked_between(down_at, time.monotonic())
                refused_while_down = load.refusals_between(down_at, time.monotonic())
                metrics_down = enricher.metrics()

                proxy.up()
                up_at = time.monotonic()
                while not {ids[n] for n in new} <= _registry_rows(direct).keys() and time.monotonic() - up_at < 60:
                    time.sleep(0.2)
                rows_after = _registry_rows(direct)
                rows_back_after = time.monotonic() - up_at
                load.stop(drain_timeout=30)
            missing, drain_wait = wait_for_delivery(load, sink, timeout=30)
            agent_ids, per_id, wrong = _stamps_by_agent(sink)
            metrics_end = enricher.metrics()

    summary = load.summary()
    figures = {
        **summary,
        "acked_requests_while_db_down": len(acked_while_down),
        "refusals_while_db_down": dict(Counter(r.code for r in refused_while_down)),
        "all_new_agents_stamped_and_delivered_s_after_down": round(all_new_stamped_after, 2),
        "new_agent_rows_while_down": sorted(rows_while_down.keys() & {ids[n] for n in new}),
        "rows_appeared_s_after_db_back": round(rows_back_after, 2),
        "spans_stamped_per_new_agent": {n: per_id[ids[n]] for n in new},
        "registry_errors": metrics_down.get("agentmon_registry_errors_total"),
        "agents_created": metrics_end.get("agentmon_agents_created_total"),
        "proxy_connections": proxy.connections,
        "proxy_resets": proxy.resets,
        "all_acked_delivered_after_load_stop_s": round(drain_wait, 2),
        "missing": len(missing),
    }
    _report("registry outage", figures)

    assert not summary["errors"], summary
    assert not missing, f"{len(missing)} acknowledged spans never reached the collector: {figures}"
    # The database outage never pushed back on clients: spans kept flowing.
    assert acked_while_down, figures
    assert not refused_while_down, figures
    # Stamped with the deterministic ids while the database was down ...
    assert not rows_while_down.keys() & {ids[n] for n in new}, figures
    assert {n: stamped_while_down.get(n) for n in new} == {n: ids[n] for n in new}, figures
    assert {n: agent_ids[n] for n in known + new} == {n: ids[n] for n in known + new}
    assert not wrong, wrong[:10]
    # ... and the rows came once it was back, under the same ids.
    assert {ids[n]: rows_after.get(ids[n]) for n in new} == {ids[n]: (n, "custom") for n in new}, figures


# ---- 3. kill -9 of the enricher under load ------------------------------------------------------


def test_kill_9_under_load_loses_no_acknowledged_span(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = _sqlite_env(data_dir) | {"AGENTMON_HOLD_SECONDS": "2"}
    kills: list[dict] = []
    with OtlpTestSink() as sink, EnricherProcess(data_dir, forward=sink.endpoint, env=env) as enricher:
        enricher.start()
        load = LoadClient(enricher.endpoint, senders=3, spans_per_request=200, interval=0.1)
        with load:
            time.sleep(4)
            # Kill 1: with a backlog. The collector holds every Export for a moment, so the
            # enricher dies with acknowledged spans in its journal that it has not delivered.
            # Kill 2: in the middle of ordinary traffic, soon after the restart (replay).
            for backlog in (True, False):
                if backlog:
                    sink.pause()
                    time.sleep(1.5)
                acked_ids = load.acked_span_ids()
                enricher.kill()
                killed_at = time.monotonic()
                delivered = set(received_span_ids(sink))
                undelivered = len(acked_ids - delivered)
                sink.resume()
                restart = enricher.start()
                while not load.acked_between(killed_at, time.monotonic()) and time.monotonic() - killed_at < 30:
                    time.sleep(0.05)
                first_ack = time.monotonic() - killed_at
                replayed, _ = wait_for_spans(acked_ids, sink, timeout=30)
                kills.append({
                    "backlog": backlog,
                    "acked_spans_undelivered_at_kill": undelivered,
                    "restart_s": round(restart, 2),
                    "first_ack_after_kill_s": round(first_ack, 2),
                    "acked_before_kill_all_delivered_s_after_kill": round(time.monotonic() - killed_at, 2)
                    if not replayed else None,
                    "still_missing_30s_after": len(replayed),
                })
                time.sleep(3)
            load.stop(drain_timeout=30)
        missing, drain_wait = wait_for_delivery(load, sink, timeout=30)
        received = received_span_ids(sink)
        log = enricher.log_tail(200)

    summary = load.summary()
    acked = load.acked_span_ids()
    duplicates = sum(count - 1 for span_id, count in received.items() if span_id in acked and count > 1)
    figures = {
        **summary,
        "kills": kills,
        "spans_received": sum(received.values()),
        "duplicates": duplicates,
        "duplicate_share": round(duplicates / max(1, len(acked)), 4),
        "received_not_acked": len(received.keys() - acked),
        "replayed_records_logged": [line.split(": ", 1)[-1] for line in log.splitlines() if "replayed" in line],
        "all_acked_delivered_after_load_stop_s": round(drain_wait, 2),
        "missing": len(missing),
    }
    _report("kill -9", figures)

    assert not summary["errors"], summary
    assert not missing, f"{len(missing)} acknowledged spans never reached the collector: {figures}"
    # The first kill really left acknowledged, undelivered spans behind (the journal replayed them).
    assert kills[0]["acked_spans_undelivered_at_kill"] > 0, figures


# ---- 4. crashes and restarts while the collector is down -----------------------------------------


def test_kill_9_and_restarts_during_collector_outage_keep_the_journal_budget_and_lose_nothing(
    tmp_path: Path,
) -> None:
    """The enricher dies (kill -9) with a full journal, restarts while the collector is still
    down, is stopped gracefully (SIGTERM) with undeliverable spans, and starts again: the
    journal's budget holds across restarts (clients stay pushed back) and, once the collector
    is back, every acknowledged span arrives."""
    data_dir = tmp_path / "data"
    env = _sqlite_env(data_dir) | {
        "AGENTMON_JOURNAL_MAX_BYTES": str(JOURNAL_MAX_BYTES),
        "AGENTMON_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "AGENTMON_HOLD_SECONDS": "2",
    }
    with OtlpTestSink() as sink, EnricherProcess(data_dir, forward=sink.endpoint, env=env) as enricher:
        enricher.start()
        load = LoadClient(enricher.endpoint, senders=2, spans_per_request=512, interval=0.25)
        with load:
            time.sleep(3)
            sink.stop()
            down_at = time.monotonic()
            time.sleep(5)  # the journal fills up in about 2 s
            undelivered_at_kill = len(load.acked_span_ids() - received_span_ids(sink).keys())
            enricher.kill()
            restart_full = enricher.start()
            time.sleep(3)
            stop_began = time.monotonic()
            exit_code = enricher.stop(timeout=30)  # SIGTERM with the collector still down
            graceful_stop = time.monotonic() - stop_began
            restart_after_stop = enricher.start()
            time.sleep(2)
            sink.start()
            up_at = time.monotonic()
            while not load.acked_between(up_at, time.monotonic()) and time.monotonic() - up_at < 60:
                time.sleep(0.1)
            first_ack_after = time.monotonic() - up_at
            time.sleep(2)
            load.stop(drain_timeout=30)
        missing, drain_wait = wait_for_delivery(load, sink, timeout=60)
        received = received_span_ids(sink)

    summary = load.summary()
    acked = load.acked_span_ids()
    acked_in_outage = load.acked_between(down_at, up_at)
    figures = {
        **summary,
        "acked_spans_undelivered_at_kill": undelivered_at_kill,
        "acked_requests_during_outage": len(acked_in_outage),
        "acked_bytes_during_outage": sum(a.size for a in acked_in_outage),
        "refusals_during_outage": dict(Counter(r.code for r in load.refusals_between(down_at, up_at))),
        "restart_with_full_journal_s": round(restart_full, 2),
        "sigterm_exit_code": exit_code,
        "sigterm_stop_s": round(graceful_stop, 2),
        "restart_after_sigterm_s": round(restart_after_stop, 2),
        "first_ack_after_collector_back_s": round(first_ack_after, 2),
        "all_acked_delivered_after_load_stop_s": round(drain_wait, 2),
        "duplicates": sum(count - 1 for span_id, count in received.items() if span_id in acked and count > 1),
        "missing": len(missing),
    }
    _report("kill -9 and SIGTERM during a collector outage", figures)

    assert not summary["errors"], summary
    assert not missing, f"{len(missing)} acknowledged spans never reached the collector: {figures}"
    assert undelivered_at_kill > 0, figures
    # A graceful stop with undeliverable spans still ends (they stay in the journal).
    assert exit_code == 0, figures
    # Restarts neither lose the journal's contents nor reset its budget: what clients got
    # acknowledged during the whole outage fits in one journal.
    assert sum(a.size for a in acked_in_outage) <= JOURNAL_MAX_BYTES, figures
    assert figures["refusals_during_outage"].get("RESOURCE_EXHAUSTED"), figures


# ---- 5. held spans and a small journal ----------------------------------------------------------


def test_held_spans_do_not_fill_the_journal_and_survive_kill_9(tmp_path: Path) -> None:
    """One agent run in ten never sends its agent span, so every request leaves LLM
    calls held for the whole hold time (6 s), while the journal holds about 1.5 s of the load.
    Held spans are carried forward (journaled again alone) and the requests they came from
    commit: no push-back for a full journal. The load stops, and a kill -9 leaves carried-forward
    records behind; after the restart every acknowledged span is delivered, the held ones too."""
    data_dir = tmp_path / "data"
    hold_seconds = 6.0
    env = _sqlite_env(data_dir) | {
        "AGENTMON_JOURNAL_MAX_BYTES": str(JOURNAL_MAX_BYTES),
        "AGENTMON_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "AGENTMON_HOLD_SECONDS": str(hold_seconds),
    }
    with OtlpTestSink() as sink, EnricherProcess(data_dir, forward=sink.endpoint, env=env) as enricher:
        enricher.start()
        load = LoadClient(enricher.endpoint, senders=3, spans_per_request=200, interval=0.1, orphan_share=0.1)
        with load:
            started = time.monotonic()
            time.sleep(10)
            # Stopped just before the kill, so that every span held after the restart was replayed.
            load.stop(drain_timeout=30)
            before_kill = enricher.metrics()
            acked_ids = load.acked_span_ids()
            enricher.kill()
            killed_at = time.monotonic()
            undelivered = len(acked_ids - received_span_ids(sink).keys())
            enricher.start()
        # The held spans are delivered when their hold ends (unstamped: their agent never came).
        missing, drain_wait = wait_for_delivery(load, sink, timeout=hold_seconds + 30)
        received = received_span_ids(sink)
        after = enricher.metrics()

    summary = load.summary()
    acked = load.acked_span_ids()
    acked_before_kill = load.acked_between(started, killed_at)
    full = [r for r in load.refusals_between(started, killed_at) if "journal is full" in r.message]
    figures = {
        **summary,
        "acked_bytes_before_kill": sum(a.size for a in acked_before_kill),
        "acked_bytes_per_s_before_kill": round(sum(a.size for a in acked_before_kill) / (killed_at - started)),
        "journal_full_refusals_before_kill": len(full),
        "spans_carried_forward_before_kill": before_kill.get("agentmon_spans_carried_forward_total"),
        "spans_held_at_kill": before_kill.get("agentmon_spans_held"),
        "acked_spans_undelivered_at_kill": undelivered,
        "spans_released_on_timeout_after_restart": after.get("agentmon_spans_released_on_timeout_total"),
        "all_acked_delivered_after_load_stop_s": round(drain_wait, 2),
        "duplicates": sum(count - 1 for span_id, count in received.items() if span_id in acked and count > 1),
        "missing": len(missing),
    }
    _report("held spans, a small journal and kill -9", figures)

    assert not summary["errors"], summary
    # The load really needed carrying forward: the hold time's ingest is several journals.
    assert figures["acked_bytes_per_s_before_kill"] * hold_seconds > 2 * JOURNAL_MAX_BYTES, figures
    assert figures["spans_carried_forward_before_kill"], figures
    assert not full, figures
    assert undelivered > 0, figures
    # Every span held at the kill was in the journal (most of them in carried-forward records):
    # replayed, held again, and released when its new hold ended.
    assert figures["spans_released_on_timeout_after_restart"] >= figures["spans_held_at_kill"] > 0, figures
    assert not missing, f"{len(missing)} acknowledged spans never reached the collector: {figures}"
