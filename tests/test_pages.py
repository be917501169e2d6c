"""GraphiQL and the dashboard in headless Chromium that can reach nothing but 127.0.0.1."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import openai
import pytest

from tests.browser import Browser, BrowserError, chromium_binary
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

VERSION = "{ version }"
SCREENSHOTS = Path(tempfile.gettempdir()) / "cb-browser-test-failures"


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (make test installs it)")
    browser = Browser(binary)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh tab; when the test fails its screenshot is kept (in SCREENSHOTS, which pytest
    does not rotate away like its temporary directories) and its path printed."""
    page = browser.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = page.screenshot(SCREENSHOTS / f"{request.node.name}-{time.strftime('%Y%m%d-%H%M%S')}.png")
        print(f"\nscreenshot of the failed page: {shot}\nbrowser problems: {page.problems}")
    page.close()


def set_editor(page, selector: str, text: str) -> None:
    page.wait_for(f"!!document.querySelector({json.dumps(selector + ' .CodeMirror')})", what=f"the {selector} editor")
    editor = f"document.querySelector({json.dumps(selector + ' .CodeMirror')}).CodeMirror"
    page.evaluate(f"{editor}.setValue({json.dumps(text)})")
    # GraphiQL parses the text after a pause; its fetcher picks HTTP or /ws from that parse
    page.wait_for(
        f"{editor}.documentAST?.loc?.source?.body === {json.dumps(text)}", what="GraphiQL to parse the editor"
    )


def response_text(page) -> str:
    return page.evaluate("document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()") or ""


def run_in_graphiql(page, query: str) -> dict:
    set_editor(page, ".graphiql-query-editor", query)
    page.evaluate("document.querySelector('.graphiql-execute-button').click()")
    page.wait_for(
        "(document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() || '').includes('\"data\"')"
        " || (document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() || '').includes('errors')",
        what="a response in GraphiQL",
    )
    return json.loads(response_text(page))


def test_graphiql_renders_and_runs_a_query_with_no_network_beyond_the_server(server, page):
    page.navigate(server.graphql_url + "/")
    page.wait_for("!!document.querySelector('.graphiql-query-editor .CodeMirror')", what="GraphiQL's editor")
    result = run_in_graphiql(page, VERSION)
    assert result == server.graphql(VERSION)
    assert not [p for p in page.problems if "request failed" in p], page.problems


CREATE_TOKEN = "mutation($w: ID!) { createToken(input: {workflow_id: $w}) { id } }"
FIRE = "mutation($t: ID!, $x: ID!) { fireTransition(input: {token_id: $t, transition_id: $x}) { place } }"
GQL_KEY = "graphql-key-for-the-dashboard-0123"


def until_seen(page, act, expression: str, attempts: int = 6, what: str = "") -> int:
    """Repeat ``act()`` until ``expression`` holds: a subscription may become active just
    after the client sees the connection acknowledged, so the first event can predate it."""
    for attempt in range(1, attempts + 1):
        act()
        try:
            page.wait_for(expression, timeout=3, what=what)
            return attempt
        except BrowserError:
            continue
    raise BrowserError(f"never saw {what or expression}; problems: {page.problems}")


def test_graphiql_runs_a_subscription_over_our_ws(server, page):
    page.navigate(server.graphql_url + "/")
    set_editor(
        page,
        ".graphiql-query-editor",
        'subscription { workflowEvents(workflow_id: "document_review") { type to_place } }',
    )
    page.evaluate("document.querySelector('.graphiql-execute-button').click()")
    until_seen(
        page,
        lambda: server.graphql(CREATE_TOKEN, {"w": "document_review"}),
        "(document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror.getValue() || '').includes('token_created')",
        what="a token_created event in GraphiQL's response",
    )
    assert json.loads(response_text(page)) == {
        "data": {"workflowEvents": {"type": "token_created", "to_place": "draft"}}
    }


# --- the dashboard ------------------------------------------------------------------------


def usd(value: float) -> str:
    """The dashboard's money format."""
    if not value:
        return "$0"
    return f"${value:.{2 if value >= 100 else 4 if value >= 0.01 else 6}f}"


def open_dashboard(page, server, loads: int = 1) -> None:
    page.navigate(server.graphql_url + "/dashboard")
    page.wait_for(f"Number(document.body.dataset.loads) >= {loads}", what="the dashboard's data")


def loads(page) -> int:
    return int(page.evaluate("document.body.dataset.loads || '0'"))


def place_tokens(page, workflow: str, place: str) -> str:
    return page.evaluate(
        f"document.querySelector('[data-workflow={json.dumps(workflow)}] [data-place={json.dumps(place)}]')?.dataset.tokens"
    )


def wait_place(page, workflow: str, place: str, count: int) -> None:
    page.wait_for(
        f"document.querySelector('[data-workflow={json.dumps(workflow)}] [data-place={json.dumps(place)}]')?.dataset.tokens === '{count}'",
        what=f"{count} token(s) on {workflow}/{place}",
    )


def stop_refreshing(page) -> None:
    page.evaluate(
        "(() => { const s = document.getElementById('refresh'); s.value = '0'; s.dispatchEvent(new Event('change')); })()"
    )


def table_values(page, table: str, key_column: str) -> dict:
    """{row key: {column: data-value}} of a dashboard table."""
    return page.evaluate(f"""Object.fromEntries([...document.querySelectorAll('#{table} tr')].slice(1).map(tr => [
        tr.querySelector('[data-column={json.dumps(key_column)}]').textContent,
        Object.fromEntries([...tr.querySelectorAll('td[data-value]')].map(td => [td.dataset.column, Number(td.dataset.value)]))]))""")


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def gateway(server_factory, upstream):
    gateway = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
    with openai.OpenAI(base_url=gateway.openai_url + "/v1", api_key="x", max_retries=0, timeout=20) as client:
        for model, count in (("gpt-4o-mini", 3), ("gpt-4o", 1)):
            for i in range(count):
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"hello {i}"}])
    gateway.graphql("mutation { setBudget(input: {scope: GLOBAL, limit_usd: 0.01, period: DAILY}) { scope } }")
    return gateway


ANALYTICS = """query($range: CostAnalyticsInput, $g: UsageGranularity) { costAnalytics(input: $range) {
  total_cost total_requests total_tokens prompt_tokens model_breakdown
  usage_series(granularity: $g) { start cost providers } } budgets { scope used_usd } }"""


def test_dashboard_shows_the_figures_of_cost_analytics_for_the_traffic_made(gateway, page):
    open_dashboard(page, gateway)
    period = page.evaluate(
        "({start_date: document.getElementById('range-start').value, end_date: document.getElementById('range-end').value})"
    )
    expected = gateway.graphql(ANALYTICS, {"range": period, "g": "DAY"})["data"]
    costs = expected["costAnalytics"]
    assert costs["total_requests"] == 4 and costs["total_cost"] > 0

    tiles = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#totals .tile')].map(t => [t.dataset.name, [Number(t.dataset.value), t.querySelector('.value').textContent]]))"
    )
    assert tiles["total_cost"] == [costs["total_cost"], usd(costs["total_cost"])]
    assert tiles["total_requests"][0] == 4 and tiles["total_tokens"][0] == costs["total_tokens"]
    assert tiles["prompt_tokens"][0] == costs["prompt_tokens"]
    assert tiles["unpriced_requests"] == [0, "0"]
    assert tiles["healthy"][1] == "1 of 1 configured"  # openai; google and ollama have no address or key

    models = table_values(page, "models", "model")
    assert models == {
        model: {
            "requests": v["requests"],
            "prompt tokens": v["prompt_tokens"],
            "completion tokens": v["completion_tokens"],
            "tokens": v["tokens"],
            "cost": v["cost"],
            "unpriced": v["unpriced_requests"],
        }
        for model, v in costs["model_breakdown"].items()
    }
    assert set(models) == {"gpt-4o-mini", "gpt-4o"}

    bars = page.evaluate(
        "[...document.querySelectorAll('#cost-chart rect[data-series]')].map(r => [r.parentNode.dataset.start, r.dataset.series, Number(r.dataset.value)])"
    )
    assert bars == [[b["start"], p, v["cost"]] for b in costs["usage_series"] for p, v in b["providers"].items()]
    assert page.evaluate("document.querySelectorAll('#cost-chart g.bucket').length") == 7  # every day of the range

    budgets = page.evaluate(
        "[...document.querySelectorAll('#budgets .budget')].map(b => [b.dataset.scope, Number(b.dataset.used)])"
    )
    assert budgets == [[b["scope"], b["used_usd"]] for b in expected["budgets"]] == [["GLOBAL", costs["total_cost"]]]
    openai_row = page.evaluate("document.querySelector('#deployments tr[data-deployment=\"openai\"]').textContent")
    assert "healthy" in openai_row and "closed" in openai_row

    before = loads(page)
    page.evaluate(
        "(() => { const g = document.getElementById('granularity'); g.value = 'hour'; g.dispatchEvent(new Event('change')); })()"
    )
    page.wait_for(f"Number(document.body.dataset.loads) > {before}", what="the hourly view")
    hourly = gateway.graphql(ANALYTICS, {"range": period, "g": "HOUR"})["data"]["costAnalytics"]["usage_series"]
    bars = page.evaluate(
        "[...document.querySelectorAll('#cost-chart rect[data-series]')].map(r => [r.parentNode.dataset.start, Number(r.dataset.value)])"
    )
    assert bars == [[b["start"], b["providers"]["openai"]["cost"]] for b in hourly]
    assert page.evaluate("document.querySelectorAll('#cost-chart g.bucket').length") == 7 * 24

    resources = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(gateway.graphql_url + "/") for url in resources), resources
    assert page.problems == []


def test_the_dashboard_shows_requests_of_unpriced_models_apart(server_factory, upstream, page):
    gateway = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
    with openai.OpenAI(base_url=gateway.openai_url + "/v1", api_key="x", max_retries=0, timeout=20) as client:
        for model in ("openai/gpt-lab-1", "openai/gpt-lab-1", "gpt-4o-mini"):  # genai-prices knows no gpt-lab-1
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    open_dashboard(page, gateway)
    tiles = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#totals .tile')].map(t => [t.dataset.name, [Number(t.dataset.value), t.querySelector('.value').textContent]]))"
    )
    assert tiles["unpriced_requests"] == [2, "2"]
    models = table_values(page, "models", "model")
    assert (models["gpt-lab-1"]["unpriced"], models["gpt-lab-1"]["cost"]) == (2, 0)
    assert models["gpt-4o-mini"]["unpriced"] == 0 and models["gpt-4o-mini"]["cost"] > 0
    shown = page.evaluate(
        "[...document.querySelectorAll('#models tr')].find(tr => tr.textContent.startsWith('gpt-lab-1'))"
        ".querySelector('[data-column=cost]').textContent"
    )
    assert shown == "unpriced"
    assert page.problems == []


def test_a_place_count_on_the_dashboard_follows_create_token_and_fire_transition(server, page):
    open_dashboard(page, server)
    stop_refreshing(page)
    page.wait_for(
        "document.getElementById('live').dataset.state === 'connected'", what="the workflowEvents subscription"
    )
    assert place_tokens(page, "document_review", "draft") == "0"
    made = []
    until_seen(
        page,
        lambda: made.append(server.graphql(CREATE_TOKEN, {"w": "document_review"})["data"]["createToken"]["id"]),
        "document.querySelector('[data-workflow=\"document_review\"] [data-place=\"draft\"]').dataset.tokens !== '0'",
        what="a new token on draft",
    )
    wait_place(page, "document_review", "draft", len(made))
    loaded = loads(page)

    assert server.graphql(FIRE, {"t": made[0], "x": "submit"})["data"]["fireTransition"]["place"] == "pending_review"
    wait_place(page, "document_review", "pending_review", 1)
    wait_place(page, "document_review", "draft", len(made) - 1)
    page.wait_for(
        "[...document.querySelectorAll('#transitions td')].some(td => td.textContent === 'submit')",
        what="the firing in Latest transitions",
    )
    assert loads(page) == loaded  # moved by the subscription, not by reloading the page's data
    assert page.problems == []


def test_the_dashboard_asks_for_graphql_api_key_and_keeps_it_in_the_tab_only(server_factory, page):
    server = server_factory(GRAPHQL_API_KEY=GQL_KEY)
    page.navigate(server.graphql_url + "/dashboard")
    page.wait_for("!document.getElementById('key-form').hidden", what="the key form")
    assert page.evaluate("document.getElementById('content').hidden") is True

    enter_key = (
        "(k => { document.getElementById('api-key').value = k; document.getElementById('key-form').requestSubmit(); })"
    )
    page.evaluate(f"{enter_key}('not-the-key')")
    page.wait_for("document.getElementById('key-error').textContent.includes('refused')", what="the wrong key refused")
    page.evaluate(f"{enter_key}({json.dumps(GQL_KEY)})")
    page.wait_for("Number(document.body.dataset.loads) >= 1", what="the dashboard's data with the key")
    assert page.evaluate("document.getElementById('key-form').hidden") is True
    assert page.evaluate("sessionStorage.getItem('cb-graphql-api-key')") == GQL_KEY
    assert page.evaluate("localStorage.length") == 0

    stop_refreshing(page)
    page.wait_for("document.getElementById('live').dataset.state === 'connected'", what="the subscription with the key")
    headers = {"Authorization": f"Bearer {GQL_KEY}"}
    until_seen(
        page,
        lambda: server.graphql(CREATE_TOKEN, {"w": "software_deployment"}, headers=headers),
        "document.querySelector('[data-workflow=\"software_deployment\"] [data-place=\"development\"]').dataset.tokens !== '0'",
        what="a live event with the key",
    )

    open_dashboard(page, server)  # a reload in the same tab needs no key again
    assert page.evaluate("document.getElementById('key-form').hidden") is True
    assert [p for p in page.problems if "401" not in p] == []
