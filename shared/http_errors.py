"""Answers of the HTTP APIs (enrich, inventory, alert status): JSON bodies, and errors that are the caller's
to fix (4xx with a reason).

ARM failures are `shared.clients.arm.ArmError`.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func
import orjson


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    """A JSON answer no cache keeps and no browser sniffs as another type."""
    return func.HttpResponse(orjson.dumps(document), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                      **(headers or {})})


class InputError(ValueError):
    """A request the API refuses: the message says what is wrong and, for resources, what is allowed."""

    def __init__(self, message: str, *, status: int = 400, allowed_types: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.allowed_types = allowed_types
