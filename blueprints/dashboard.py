"""Web pages of the GraphQL port: the dashboard at ``/dashboard`` and the files both pages load.

Every asset is served from ``blueprints/static`` (our own JavaScript and CSS, and the
vendored React, GraphiQL and graphql-ws listed in ``static/vendor/VERSIONS.md``), so the
pages work with no network beyond this server. The page itself holds no data: it asks
``/graphql`` and ``/ws`` for every number, with the GRAPHQL_API_KEY the user types in
(kept in the browser's sessionStorage) when the server requires one.
"""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("dashboard", __name__, static_folder="static", static_url_path="/assets", template_folder="templates")


@bp.get("/dashboard")
def dashboard():
    return render_template("dashboard.html")
