"""Several processes register the same agents at the same moment: one row per agent,
the same id for everyone, and no errors, on SQLite and on MariaDB."""

from __future__ import annotations

import multiprocessing as mp
import random

import sqlalchemy as sa

from registry_api.store import AgentIdentity, AgentStore, create_registry_engine

PROCESSES = 6
NAMES = [f"agent-{i}" for i in range(25)]
FLOWS = [f"flow-{i}" for i in range(10)]


def _identities() -> list[AgentIdentity]:
    by_name = [AgentIdentity(name=name, type="custom") for name in NAMES]
    by_flow = [AgentIdentity(name=f"Flow {flow}", type="langflow", external_id=flow) for flow in FLOWS]
    return by_name + by_flow


def _register_all(url: str, barrier, results, seed: int) -> None:
    engine = create_registry_engine(url)
    store = AgentStore(engine)
    identities = _identities()
    random.Random(seed).shuffle(identities)
    barrier.wait(timeout=60)  # everyone starts writing at once
    try:
        results.put(("ok", {identity.key: store.resolve_or_create(identity)[0].id for identity in identities}))
    except Exception as error:  # reported, then asserted on by the parent
        results.put(("error", repr(error)))
    finally:
        engine.dispose()


def test_processes_registering_the_same_names_get_one_row_each(registry_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    workers = [ctx.Process(target=_register_all, args=(registry_url, barrier, results, seed)) for seed in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    errors = [detail for status, detail in outcomes if status == "error"]
    assert errors == []
    id_maps = [detail for _, detail in outcomes]
    assert all(ids == id_maps[0] for ids in id_maps), "every process must see the same id for each agent"
    expected = {identity.key: identity.agent_id for identity in _identities()}
    assert id_maps[0] == expected

    engine = create_registry_engine(registry_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, COUNT(*) FROM agents GROUP BY name")).all()
    engine.dispose()
    assert len(rows) == len(NAMES) + len(FLOWS)
    assert all(count == 1 for _, count in rows)
