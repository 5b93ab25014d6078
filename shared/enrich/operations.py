"""What an operation id means: the catalog's words (or words derived from the id) and its common event."""

from __future__ import annotations

import re
from typing import get_args

from shared.enrich.models import OperationContext
from shared.http_errors import InputError
from shared.normalize.catalog import classify, operation_description, operation_info
from shared.normalize.mappers.common import action_from_operation
from shared.normalized_event import Source

OPERATION_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 ._/-]{0,255}"
RESULT_PATTERN = r"[A-Za-z]{1,32}"
SOURCES: tuple[str, ...] = get_args(Source)
_OPERATION = re.compile(OPERATION_PATTERN)
_RESULT = re.compile(RESULT_PATTERN)


def operation_context(name: str, source: str | None = None, result: str | None = None) -> OperationContext:
    """Catalog entry and classification. A name no catalog knows gets the description normalize derives
    from the id, and no display name.

    Without a source, an id with slashes is taken as an Activity Log operation and one without as an
    Entra audit activity; without a result, as a successful one.
    """
    if not _OPERATION.fullmatch(name):
        raise InputError("not an operation id: letters, digits, spaces and . _ / - only, at most 256 "
                         "characters, e.g. Microsoft.Network/networkSecurityGroups/securityRules/write")
    if source is not None and source not in SOURCES:
        raise InputError(f"source must be one of: {', '.join(SOURCES)}")
    if result is not None and not _RESULT.fullmatch(result):
        raise InputError("result must be a single word of letters, e.g. Success or Failure")
    info = operation_info(name)
    operation = name.upper()
    is_arm = "/" in operation
    source = source or ("activity" if is_arm else "audit")
    action = action_from_operation(operation) if is_arm else "other"
    return OperationContext(
        operation=operation, display_name=info.display_name if info else None,
        description=(info.description if info else None) or operation_description(operation),
        provider=operation.split("/", 1)[0] if is_arm else None, action=action,
        common_event=classify(source, operation, action=action, result=result or "Success"))
