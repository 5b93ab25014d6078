"""enrich_fn: on-demand context for investigations over HTTP, one function per route.

Function keys, or Entra ID sign-in with app roles (`shared.caller`).

Bindings only. The routes (template, method, what runs) are declared once in `shared.enrich.api.ROUTES`,
which the OpenAPI document is generated from too, so the bindings below cannot drift from the
documented API. `python -m shared serve` serves these same functions locally.
"""

import azure.functions as func

from shared.caller import route_auth_level
from shared.enrich import api

bp = func.Blueprint()


def _bind(route: api.Route) -> None:
    def handler(req: func.HttpRequest) -> func.HttpResponse:
        return api.handle(route, req)

    bp.function_name(route.function)(
        bp.route(route=route.path, methods=[route.method], auth_level=route_auth_level())(handler))


for _route in api.ROUTES:
    _bind(_route)
