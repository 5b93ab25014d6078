"""Errors of the HTTP APIs (enrich, inventory) that are the caller's to fix: 4xx with a reason.

ARM failures are `shared.clients.arm.ArmError`.
"""

from __future__ import annotations


class InputError(ValueError):
    """A request the API refuses: the message says what is wrong and, for resources, what is allowed."""

    def __init__(self, message: str, *, status: int = 400, allowed_types: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.allowed_types = allowed_types
