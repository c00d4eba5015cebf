"""The on-demand run form: the parameter schema of compress_catalog stored by a real Prefect API (the session's
SQLite-backed test server; tests/e2e checks the deployment ``prefect deploy`` creates, on PostgreSQL in CI) reads
in the order a user decides, with drop-downs, labels in words and no internal knobs; the server still accepts
the values the form sends (an empty optional field is null) and refuses a value outside a drop-down."""

from __future__ import annotations

import pytest

from tests.flows.run_form import check_run_form

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_run_form_schema_stored_by_the_api_reads_in_order():
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.utilities.callables import parameter_schema

    from flows.catalog import compress_catalog

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("compress-catalog")
        deployment_id = client.create_deployment(
            flow_id, "form-test", entrypoint="flows/catalog.py:compress_catalog", enforce_parameter_schema=True,
            parameter_openapi_schema=parameter_schema(compress_catalog).model_dump(), parameters={"dispatch": "deployment"})
        stored = client.read_deployment(deployment_id)
        check_run_form(stored.parameter_openapi_schema)
        run = client.create_flow_run_from_deployment(deployment_id, parameters={
            "source": "/data/adapters", "options": {"density": 0.2, "codec": "bitmask", "task": None},
            "service": {"publish_to": None}})
        assert run.parameters["dispatch"] == "deployment" and run.parameters["options"]["codec"] == "bitmask"
        with pytest.raises(PrefectHTTPStatusError, match="409"):
            client.create_flow_run_from_deployment(deployment_id, parameters={
                "source": "/data/adapters", "options": {"codec": "zip"}})
        client.delete_deployment(deployment_id)


def test_run_form_values_build_the_configuration():
    """What the form sends (drop-down values, omitted optional fields) builds the same configurations as the CLI."""
    from flows.params import CompressionOptions, ServiceParameters

    options = CompressionOptions(density=0.2, device="cuda", codec="bitmask")
    assert options.compression().device == "cuda" and options.compression().codec == "bitmask"
    assert ServiceParameters(publish_to=None).config().publish_to is None
    with pytest.raises(ValueError, match="device"):
        CompressionOptions(device="gpu")
