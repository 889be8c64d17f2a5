"""The dashboard in a real browser, over data sent through the real pipeline
(OpenTelemetry SDK -> enricher -> chDB): every number shown equals the API's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from opentelemetry.trace import Status, StatusCode
from playwright.sync_api import expect

from registry_api.store import AgentIdentity
from tests.enricher.conftest import tracer_provider, wait_until
from tests.registry_api.ui.conftest import API_KEY

PLANNER = AgentIdentity(name="planner").agent_id
SQL_BOT = AgentIdentity(name="sql-bot").agent_id


# The page's formatting rules (registry_api/ui/static/common.js), applied to the API's numbers.
def f_int(n: int) -> str:
    return f"{n:,}"


def f_cost(usd: float) -> str:
    return f"${usd:.6f}" if abs(usd) < 0.01 else f"${usd:.4f}"


def f_rate(rate: float) -> str:
    return f"{100 * rate:.1f}%"


def f_ms(ms: float | None) -> str:
    if ms is None:
        return "\u2013"
    if ms < 10:
        return f"{ms:.1f} ms"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def send_runs(enricher, agent: str, runs: list[tuple[bool, list[tuple[str, int, int]]]]) -> int:
    """Agent runs with LLM calls through the SDK's OTLP exporter; returns the span count."""
    provider = tracer_provider(enricher)
    tracer = provider.get_tracer("agent-app")
    spans = 0
    for failed, calls in runs:
        with tracer.start_as_current_span(
            f"invoke_agent {agent}", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent}
        ) as run:
            for model, tokens_in, tokens_out in calls:
                with tracer.start_as_current_span(f"chat {model}", attributes={
                    "gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                    "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out}):
                    pass
            if failed:
                run.set_status(Status(StatusCode.ERROR, "tool failed"))
        spans += 1 + len(calls)
    provider.shutdown()
    return spans


def stored(enricher, count: int) -> bool:
    return wait_until(lambda: enricher.metrics.spans_forwarded.labels("clickhouse")._value.get() >= count, 20)


def window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=2)).isoformat(), "to": (now + timedelta(minutes=5)).isoformat()}


def test_empty_overview_says_how_to_send_traces(page) -> None:
    page.goto("/ui")
    notice = page.get_by_role("status")
    expect(notice).to_contain_text("No agents yet")
    expect(notice).to_contain_text("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317")


def test_overview_detail_trace_and_live_update(agentmon, page, screenshot_dir) -> None:
    enricher, api = agentmon
    sent = send_runs(enricher, "planner", [
        (False, [("gpt-4o-mini", 1200, 300), ("gpt-4o", 800, 150)]),
        (True, [("gpt-4o-mini", 90, 10)]),
        (False, [("claude-3-5-sonnet", 400, 100), ("gpt-4o-mini", 20, 5), ("gpt-4o", 7, 3)]),
    ])
    sent += send_runs(enricher, "sql-bot", [(False, [("gpt-4o-mini", 50, 12)])])
    assert stored(enricher, sent)
    assert wait_until(lambda: len(api.client.get("/agents").json()["items"]) == 2, 10)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    # The overview: one row per agent, every figure as the API gives it.
    page.goto("/ui")
    overview = {row["agent_id"]: row for row in api.client.get("/stats/agents", params=window()).json()["items"]}
    for agent_id in (PLANNER, SQL_BOT):
        row, want = page.locator(f"tr[data-agent-id='{agent_id}']"), overview[agent_id]
        expect(row.locator("[data-col=name]")).to_have_text(want["name"])
        expect(row.locator("[data-col=type]")).to_have_text("custom")
        expect(row.locator("[data-col=project_id]")).to_have_text(want["project_id"])
        expect(row.locator("[data-col=runs]")).to_have_text(f_int(want["runs"]))
        expect(row.locator("[data-col=llm_calls]")).to_have_text(f_int(want["llm_calls"]))
        expect(row.locator("[data-col=tokens]")).to_have_text(f_int(want["input_tokens"] + want["output_tokens"]))
        expect(row.locator("[data-col=cost_usd]")).to_have_text(f_cost(want["cost_usd"]))
        expect(row.locator("[data-col=error_rate]")).to_have_text(f_rate(want["error_rate"]))
        expect(row.locator("[data-col=p95_run_duration_ms]")).to_have_text(f_ms(want["p95_run_duration_ms"]))
    assert overview[PLANNER]["runs"] == 3 and overview[PLANNER]["llm_calls"] == 6 and overview[PLANNER]["errors"] == 1
    expect(page.locator("#live")).to_have_class("live on")
    page.screenshot(path=str(screenshot_dir / "overview.png"), full_page=True)

    # Sorting and search.
    page.locator("th[data-sort=runs]").click()  # runs, ascending
    expect(page.locator("#agents tbody tr").first).to_have_attribute("data-agent-id", SQL_BOT)
    page.locator("th[data-sort=runs]").click()  # runs, descending
    expect(page.locator("#agents tbody tr").first).to_have_attribute("data-agent-id", PLANNER)
    page.get_by_label("Search agents").fill("sql")
    expect(page.locator("#agents tbody tr")).to_have_count(1)
    page.get_by_label("Search agents").fill("")
    expect(page.locator("#agents tbody tr")).to_have_count(2)

    # Details: the agent's page, KPIs equal to its stats.
    page.locator(f"tr[data-agent-id='{PLANNER}'] a.details").click()
    expect(page).to_have_url(f"{api.url}/ui/agents/{PLANNER}?range=24h")
    stats = api.client.get(f"/agents/{PLANNER}/stats", params=window()).json()
    expect(page.locator("#agent-name")).to_have_text("planner")
    expect(page.locator("[data-kpi=runs] .value")).to_have_text(f_int(stats["runs"]))
    expect(page.locator("[data-kpi=cost] .value")).to_have_text(f_cost(stats["cost_usd"]))
    expect(page.locator("[data-kpi=error_rate] .value")).to_have_text(f_rate(stats["error_rate"]))
    expect(page.locator("[data-kpi=p95] .value")).to_have_text(f_ms(stats["p95_run_duration_ms"]))
    expect(page.locator("[data-field=agent_id]")).to_have_text(PLANNER)
    # The hourly chart: this hour's bars hold the runs and the errors.
    series = api.client.get(f"/agents/{PLANNER}/timeseries", params={**window(), "bucket": "1h"}).json()["buckets"]
    bars = page.locator("#chart-runs rect")
    expect(bars.first).to_be_visible()
    drawn = {(bar.get_attribute("data-series"), float(bar.get_attribute("data-value"))) for bar in bars.all()}
    assert ("errors", float(sum(b["errors"] for b in series))) in drawn
    assert ("ok_runs", float(sum(b["runs"] - b["errors"] for b in series))) in drawn

    # The run list equals the API's, newest first.
    runs = api.client.get(f"/agents/{PLANNER}/traces", params={**window(), "limit": 20}).json()["items"]
    rows = page.locator("#runs-table tbody tr")
    expect(rows).to_have_count(len(runs))
    for index, run in enumerate(runs):
        row = rows.nth(index)
        expect(row).to_have_attribute("data-trace-id", run["trace_id"])
        expect(row.locator("[data-col=status]")).to_have_text(run["status"])
        expect(row.locator("[data-col=llm_calls]")).to_have_text(f_int(run["llm_calls"]))
        expect(row.locator("[data-col=tokens]")).to_have_text(f_int(run["input_tokens"] + run["output_tokens"]))
        expect(row.locator("[data-col=cost]")).to_have_text(f_cost(run["cost_usd"]))

    # A trace: its LLM calls with model, tokens, cost, duration and status.
    biggest = max(runs, key=lambda run: run["llm_calls"])
    page.locator(f"#runs-table tr[data-trace-id='{biggest['trace_id']}']").click()
    tree = api.client.get(f"/traces/{biggest['trace_id']}").json()
    calls = page.locator("#trace-table tr.llm-call")
    expect(calls).to_have_count(3)
    for call in tree["llm_calls"]:
        row = page.locator(f"#trace-table tr[data-span-id='{call['span_id']}']")
        expect(row.locator("[data-col=model]")).to_have_text(call["model"])
        expect(row.locator("[data-col=input_tokens]")).to_have_text(f_int(call["input_tokens"]))
        expect(row.locator("[data-col=output_tokens]")).to_have_text(f_int(call["output_tokens"]))
        expect(row.locator("[data-col=cost]")).to_have_text(f_cost(call["cost_usd"]))
        expect(row.locator("[data-col=duration]")).to_have_text(f_ms(call["duration_ms"]))
        expect(row.locator("[data-col=status]")).to_have_text(call["status"] or "Unset")
    assert sorted(c["model"] for c in tree["llm_calls"]) == ["claude-3-5-sonnet", "gpt-4o", "gpt-4o-mini"]
    page.screenshot(path=str(screenshot_dir / "agent.png"), full_page=True)

    # Live: a new run shows up without a reload.
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#live")).to_have_class("live on")
    assert stored(enricher, sent + send_runs(enricher, "planner", [(True, [("gpt-4o", 10, 10)])]))
    expect(page.locator("[data-kpi=runs] .value")).to_have_text(f_int(stats["runs"] + 1), timeout=20_000)
    expect(page.locator("#runs-table tbody tr")).to_have_count(len(runs) + 1)
    assert page.evaluate("window.__sameDocument") is True

    # Nothing came from anywhere but agentmon itself.
    assert requests and all(url.startswith(api.url) for url in requests), requests


def test_overview_updates_live_when_a_new_agent_appears(agentmon, page) -> None:
    enricher, _ = agentmon
    page.goto("/ui")
    expect(page.get_by_role("status")).to_contain_text("No agents yet")
    expect(page.locator("#live")).to_have_class("live on")
    assert stored(enricher, send_runs(enricher, "late-bot", [(False, [("gpt-4o-mini", 5, 5)])]))
    row = page.locator(f"tr[data-agent-id='{AgentIdentity(name='late-bot').agent_id}']")
    expect(row.locator("[data-col=runs]")).to_have_text("1", timeout=20_000)
    expect(row.locator("[data-col=llm_calls]")).to_have_text("1")


def test_monitoring_toggle_needs_the_api_key(agentmon, page) -> None:
    _, api = agentmon
    agent = api.client.post("/agents/register", json={"name": "toggled", "type": "vanna"},
                            headers={"X-API-Key": API_KEY}).json()
    page.goto(f"/ui/agents/{agent['id']}")
    toggle = page.get_by_label("Monitoring")
    expect(toggle).to_be_checked()
    expect(toggle).to_be_disabled()
    expect(page.locator("#runs")).to_contain_text("No runs in this time range")
    page.get_by_label("API key").fill("wrong")
    expect(toggle).to_be_enabled()
    # click(), not uncheck(): the page puts the switch back as soon as the API refuses the key,
    # which can be before uncheck() looks, and uncheck() then fails on a state that is right.
    toggle.click()
    expect(page.locator("#toggle-note")).to_have_text("The API key was not accepted.")
    expect(toggle).to_be_checked()
    assert api.client.get(f"/agents/{agent['id']}").json()["monitoring_enabled"] is True
    page.get_by_label("API key").fill(API_KEY)
    toggle.click()
    expect(toggle).not_to_be_checked()
    expect(page.locator("[data-field=monitoring]")).to_have_text("off")
    assert api.client.get(f"/agents/{agent['id']}").json()["monitoring_enabled"] is False


def test_unknown_agent_page_says_so(agentmon, page) -> None:
    page.goto("/ui/agents/00000000-0000-0000-0000-000000000000")
    expect(page.locator("#agent-name")).to_have_text("Agent not found")
    expect(page.get_by_role("alert")).to_contain_text("See all agents")
