"""OpenAPI 3.1 document of the enrichment routes, generated from their declarations and pydantic models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.enrich.models import ErrorBody

if TYPE_CHECKING:
    from shared.enrich.api import Parameter, Route

_COMPONENTS = "#/components/schemas/{model}"
_ERROR_REF = {"$ref": _COMPONENTS.format(model="ErrorBody")}


def _parameter(parameter: Parameter) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if parameter.pattern:
        schema["pattern"] = parameter.pattern
    if parameter.max_length:
        schema["maxLength"] = parameter.max_length
    if parameter.formats:
        schema["anyOf"] = [{"format": name} for name in parameter.formats]
    if parameter.choices:
        schema = {"type": "string", "enum": list(parameter.choices)}
    described: dict[str, Any] = {"name": parameter.name, "in": parameter.location, "required": parameter.required,
                                 "description": parameter.description, "schema": schema}
    if parameter.example is not None:
        described["example"] = parameter.example
    return described


def _operation(route: Route, refs: Mapping[tuple[Any, JsonSchemaMode], dict[str, Any]]) -> dict[str, Any]:
    answer = ({"$ref": refs[(route.answer, "serialization")]["$ref"]} if route.answer is not None
              else {"type": "object"})
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": answer}}}}
    for status in route.errors:
        responses[str(status)] = {"description": HTTPStatus(status).phrase,
                                  "content": {"application/json": {"schema": _ERROR_REF}}}
    operation: dict[str, Any] = {"operationId": route.function, "summary": route.summary,
                                 "parameters": [_parameter(parameter) for parameter in route.parameters],
                                 "responses": responses}
    if route.body is not None:
        media: dict[str, Any] = {"schema": {"$ref": refs[(route.body, "validation")]["$ref"]}}
        if route.example is not None:
            media["example"] = route.example
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    return operation


def document(routes: Sequence[Route]) -> dict[str, Any]:
    """Paths as clients call them: under the `/api` prefix, catch-all `{*name}` written as `{name}`."""
    models: set[tuple[type[BaseModel], JsonSchemaMode]] = {
        (route.answer, "serialization") for route in routes if route.answer is not None}
    models |= {(route.body, "validation") for route in routes if route.body is not None}
    models.add((ErrorBody, "serialization"))
    refs, schemas = models_json_schema(sorted(models, key=lambda pair: (pair[0].__name__, pair[1])),
                                       ref_template=_COMPONENTS)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = "/" + re.sub(r"\{\*+(\w+)\}", r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Stormwatch enrichment API", "version": "1",
                 "description": "On-demand context for investigations (enrich_fn). Answers are JSON; every "
                                "error is {\"error\": {\"status\", \"message\"}}."},
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key",
                                                "description": "A function or host key of the app"}},
        },
    }
