"""``openapi.yaml`` is generated from the app and must match it; schemathesis then fuzzes the
running gateway from that file: no 5xx, and every response conforms to the document."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hamnet_procs import ROOT
from schemathesis.specs.openapi.checks import positive_data_acceptance

SPEC = ROOT / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)


def test_openapi_yaml_is_in_sync() -> None:
    from hamnet_service.openapi import render

    assert SPEC.read_text() == render(), (
        "openapi.yaml is stale: run `python -m hamnet_service.openapi > openapi.yaml`"
    )


@pytest.mark.service
@pytest.mark.slow
@schema.parametrize()
@hypothesis.settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_api_conforms(case, gateway: str, worker) -> None:
    # Random bytes that satisfy the upload schema are (rightly) never a video, so "schema-valid
    # input must be accepted" does not apply; every other default check does.
    case.call_and_validate(base_url=gateway, excluded_checks=[positive_data_acceptance])
