"""Calibration inside the catalog flow, on the bundled example catalog: α chosen on the adapter's own
validation task, the sweep recorded in the registry, the plot shown as a markdown artifact linked from the run's index, and the
base model loaded once for the batch of calibrated adapters."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]


def test_calibrated_adapter_records_its_sweep(service, monkeypatch):
    import compeft.calibrate.model as model_mod
    from examples.catalog_builder import example_catalog
    from flows.catalog import compress_catalog
    from flows.params import CompressionOptions

    loads = []
    real = model_mod._from_pretrained
    monkeypatch.setattr(model_mod, "_from_pretrained", lambda path, device: loads.append(path) or real(path, device))
    catalog = example_catalog()
    color, pair = catalog.adapter("lora-color"), catalog.adapter("lora-pair")
    options = CompressionOptions(tasks={"lora-color": str(color.task_yaml), "lora-pair": str(pair.task_yaml)},
                                 base=str(catalog.base_dir), densities=[0.1], alphas=[0.5, 2.0], limit=40,
                                 device="cpu", search="grid")
    result = compress_catalog(str(catalog.root), options=options, service=service)
    by_name = {o["name"]: o for o in result["outcomes"]}
    for name in ("lora-color", "lora-pair"):
        assert by_name[name]["status"] == "compressed", by_name[name]
        assert by_name[name]["alpha"] in (0.5, 2.0)
        assert by_name[name]["score_original"] is not None and by_name[name]["score_compressed"] is not None
    assert by_name["lora-plus"]["status"] == "compressed" and by_name["lora-plus"]["alpha"] == 1.0
    assert loads == [str(catalog.base_dir.resolve())]  # one base load for the batch of two calibrations

    detail = service.config().registry().get_artifact(by_name["lora-color"]["artifact_id"])
    [cal] = detail.calibrations
    assert {(p["density"], p["alpha"]) for p in cal.scores} == {(0.1, 0.5), (0.1, 2.0)}
    assert cal.chosen_alpha == detail.artifact.alpha and cal.original_score == by_name["lora-color"]["score_original"]
    assert detail.artifact.options["mode"] == "calibrate"

    by_key = {a.key: a for a in _artifacts_of(result["run_id"])}  # found from the catalog run itself
    plot = by_key["compeft-calibration-lora-color"]
    assert "score vs α" in plot.data and "| 0.1 | 2 |" in plot.data
    index = by_key["compeft-run-index"].data  # the run's index links every calibration plot
    assert f"[calibration of lora-color](/artifacts/artifact/{plot.id})" in index
    assert f"/artifacts/artifact/{by_key['compeft-calibration-lora-pair'].id}" in index

    again = compress_catalog(str(catalog.root), options=options, service=service)
    by_name = {o["name"]: o for o in again["outcomes"]}
    assert by_name["lora-color"]["status"] == "existing" and by_name["lora-color"]["score_compressed"] is not None
    assert len(loads) == 1  # nothing to calibrate: the base is not loaded at all
    assert len(service.config().registry().get_artifact(detail.artifact.id).calibrations) == 1


def _artifacts_of(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
