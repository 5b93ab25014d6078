"""inventory_fn: what normal looks like, over HTTP with function keys or Entra ID sign-in (`shared.caller`).

Bindings only: `GET /api/inventory` answers JSON, `GET /api/dashboard` the same answer as one HTML
page (`shared.inventory.api`, `shared.inventory.dashboard`). detect_fn keeps the aggregates they read.
They are imported by the first request, not when the host indexes the app (cold start).
"""

import azure.functions as func

from shared.caller import route_auth_level

bp = func.Blueprint()


@bp.function_name("inventory")
@bp.route(route="inventory", methods=["GET"], auth_level=route_auth_level())
def inventory(req: func.HttpRequest) -> func.HttpResponse:
    from shared.http_errors import json_response  # noqa: PLC0415 - cold start
    from shared.inventory.api import handle  # noqa: PLC0415 - cold start

    return handle(req, lambda answer: json_response(200, answer))


@bp.function_name("dashboard")
@bp.route(route="dashboard", methods=["GET"], auth_level=route_auth_level())
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    from shared.inventory.api import handle  # noqa: PLC0415 - cold start
    from shared.inventory.dashboard import html_response, render_dashboard  # noqa: PLC0415

    return handle(req, lambda answer: html_response(render_dashboard(answer)))
