"""Schemathesis over the app's own OpenAPI document: malformed requests never give a 5xx and
every response matches the documented schema (all of schemathesis' checks).

Two adjustments:
- a multipart `file` that is schema-valid (any bytes) is usually not an image, so a positive case
  may be refused with 400/413/415/422 — those are the documented refusals — and a schema-valid
  pipeline saved under a name already taken is a documented 409;
- a multipart body is not held to "schema-violating data is refused": every part is bytes on the
  wire, so a "number" file part or an "object" settings part serializes to exactly the bytes of a
  valid string part (`{}` is a valid settings field) and the server cannot, and must not, tell
  them apart. Bad multipart calls are refused in the tool tests instead.
"""

from __future__ import annotations

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection

from pixmill.server.app import create_app

MIN_CASES = 1000

app = create_app(data_dir=tempfile.mkdtemp(prefix="pixmill-fuzz-"))
config = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                # 403: the admin routes are off in this app (PIXMILL_ENABLE_ADMIN unset).
                "expected-statuses": ["2xx", "400", "403", "404", "409", "413", "415", "422"]
            }
        }
    }
)
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, config=config)
cases_run: list[str] = []


@schema.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    cases_run.append(case.operation.label)
    multipart = (case.media_type or "").startswith("multipart/")
    case.call_and_validate(excluded_checks=[negative_data_rejection] if multipart else None)


def test_enough_generated_requests() -> None:
    if not cases_run:
        pytest.skip("the schemathesis test was deselected")
    print(f"schemathesis generated {len(cases_run)} requests")
    assert len(cases_run) >= MIN_CASES, f"only {len(cases_run)} generated requests"
    # Every tool's POST was exercised, not just the cheap GETs.
    assert any(label.startswith("POST /api/v1/tools/image/resize") for label in cases_run)
