"""The served API against its own OpenAPI document (schemathesis): requests generated from the schema,
valid and invalid, never produce a 5xx; answers match their documented status codes, media types and
schemas; and data the schema rules out is refused. Bounded: 40 examples per operation and mode.

Schemathesis' pytest fixture loader relies on a pytest internal that pytest 9 removed, so each
operation's hypothesis strategy is driven here directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shared.cli.serve import ServedProcess

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
OPERATIONS = [("GET", "/enrich/ip/{ip}"), ("GET", "/enrich/operation/{name}"), ("GET", "/enrich/resource"),
              ("GET", "/enrich/alert"), ("POST", "/enrich/alert/dismiss"), ("POST", "/enrich/event")]


@pytest.fixture(scope="module")
def enrich_api(served: ServedProcess) -> schemathesis.BaseSchema:
    """The document as served. Like `func start`, `serve` checks no function key, so the key header
    is left out of generation (the Functions host, not our code, enforces it in Azure)."""
    config = SchemathesisConfig()
    config.projects.default.generation.update(with_security_parameters=False)
    return schemathesis.openapi.from_url(f"{served.url}/enrich/openapi.json", config=config)


def test_the_served_document_has_every_route(enrich_api: schemathesis.BaseSchema) -> None:
    """Loaded from its URL, schemathesis leaves out the operation that serves the document itself."""
    labels = {result.ok().label for result in enrich_api.get_all_operations() if isinstance(result, Ok)}
    assert labels == {f"{method} {path}" for method, path in OPERATIONS}


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_the_documented_examples_work(enrich_api: schemathesis.BaseSchema, method: str, path: str) -> None:
    """Each operation's example (an id of the fictional estate, which the fake ARM holds) answers 200."""
    strategies = enrich_api[path][method].get_strategies_from_examples()
    assert strategies

    @given(case=strategies[0])
    @settings(max_examples=1, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == 200, response.text

    run()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_generated_requests(enrich_api: schemathesis.BaseSchema, method: str, path: str,
                            mode: GenerationMode) -> None:
    operation = enrich_api[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(checks=CHECKS)

    run()
