"""inventory_fn: what normal looks like, over HTTP with function-key auth.

Bindings only: `GET /api/inventory` answers JSON, `GET /api/dashboard` the same answer as one HTML
page (`shared.inventory.api`, `shared.inventory.dashboard`). detect_fn keeps the aggregates they read.
"""

import azure.functions as func

from shared.inventory.api import handle, json_response
from shared.inventory.dashboard import html_response, render_dashboard

bp = func.Blueprint()


@bp.function_name("inventory")
@bp.route(route="inventory", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def inventory(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, lambda answer, _code: json_response(200, answer))


@bp.function_name("dashboard")
@bp.route(route="dashboard", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    return handle(req, lambda answer, code: html_response(render_dashboard(answer, code)))
