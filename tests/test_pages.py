"""GraphiQL and the dashboard in headless Chromium that can reach nothing but 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from tests.browser import Browser, chromium_binary

VERSION = "{ version }"


@pytest.fixture(scope="module")
def browser():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (make test installs it)")
    browser = Browser(binary)
    yield browser
    browser.close()


@pytest.fixture
def page(browser, request, tmp_path):
    """A fresh tab; when the test fails its screenshot is kept and its path printed."""
    page = browser.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = page.screenshot(tmp_path / f"{request.node.name}.png")
        print(f"\nscreenshot of the failed page: {shot}\nbrowser problems: {page.problems}")
    page.close()


def set_editor(page, selector: str, text: str) -> None:
    page.wait_for(f"!!document.querySelector({json.dumps(selector + ' .CodeMirror')})", what=f"the {selector} editor")
    page.evaluate(
        f"document.querySelector({json.dumps(selector + ' .CodeMirror')}).CodeMirror.setValue({json.dumps(text)})"
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
