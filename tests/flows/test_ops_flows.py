"""Issue 14 through Prefect: catalog runs mark near-duplicates; merge and compose flows take registry ids or
directories and record their results with lineage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compeft.adapters import read_adapter
from tests.adapters import write_adapter

pytestmark = pytest.mark.usefixtures("prefect_api")


def _catalog_with_a_reupload(root: Path) -> Path:
    from tests.flows.catalogs import make_catalog

    make_catalog(root, n=2, broken=False, base_model_dir=False)
    original = read_adapter(root / "lora-0")
    g = torch.Generator().manual_seed(9)
    noisy = {k: v + 1e-3 * v.std() * torch.randn(v.shape, generator=g) for k, v in original.tensors.items()}
    write_adapter(root / "lora-0-reupload", noisy, original.config)
    return root


def test_catalog_marks_near_duplicates_and_merge_flow_records_lineage(tmp_path, service):
    from flows.catalog import compress_catalog
    from flows.ops import merge_artifacts
    from flows.params import MergeOptions

    catalog = _catalog_with_a_reupload(tmp_path / "catalog")
    result = compress_catalog(str(catalog), service=service)
    by_name = {o["name"]: o for o in result["outcomes"]}
    dup, original = by_name["lora-0-reupload"], by_name["lora-0"]
    assert dup["duplicate_of"] == original["artifact_id"] and dup["duplicate_cosine"] > 0.95
    assert original["duplicate_of"] is None and by_name["lora-1"]["duplicate_of"] is None

    registry = service.config().registry()
    ids = [original["artifact_id"], dup["artifact_id"]]
    merged = merge_artifacts([str(ids[0]), f"#{ids[1]}"], MergeOptions(method="ties", to="compeft"), service=service)
    op = registry.get_operation(merged["operation_id"])
    assert [i.artifact_id for i in op.inputs] == ids and op.method == "ties" and op.output_format == "compeft"
    assert op.artifact_id == merged["artifact_id"] and Path(merged["output_uri"], "compeft.safetensors").is_file()
    detail = registry.get_artifact(merged["artifact_id"])
    assert detail.adapter.uri.startswith("merge:") and registry.get_signature(merged["artifact_id"]) is not None
    assert [o.id for o in registry.operations_using(ids[0])] == [op.id]

    stored = registry.get_artifact(ids[0]).artifact.storage_uri
    peft = merge_artifacts([stored, str(ids[1])], MergeOptions(method="task_arithmetic", weights=(0.5, 0.5)),
                           out=str(tmp_path / "merged-peft"), service=service)
    op = registry.get_operation(peft["operation_id"])
    assert (tmp_path / "merged-peft" / "adapter_model.safetensors").is_file() and op.output_format == "peft"
    assert [i.artifact_id for i in op.inputs] == ids and [i.weight for i in op.inputs] == [0.5, 0.5]
    with pytest.raises(Exception, match="needs a destination"):
        merge_artifacts([str(ids[0])], MergeOptions(method="ties"), service=service)


@pytest.mark.slow
def test_compose_flow_records_the_learned_weights(tmp_path, service):
    import compeft
    from examples.catalog_builder import example_catalog
    from flows.ops import compose_artifacts
    from flows.params import ComposeOptions

    catalog = example_catalog()
    experts = [str(compeft.compress(catalog.adapter(n).path, tmp_path / n, density=0.3, device="cpu").path)
               for n in ("lora-color", "lora-pair")]
    options = ComposeOptions(task=str(catalog.task_yamls["color"]), base=str(catalog.base_dir), shots=4, budget=2,
                             device="cpu")
    result = compose_artifacts(experts, options, out=str(tmp_path / "composed"), service=service)
    op = service.config().registry().get_operation(result["operation_id"])
    assert op.kind == "compose" and [i.address for i in op.inputs] == experts
    assert [i.weight for i in op.inputs] == result["result"]["weights"]
    assert (tmp_path / "composed" / "compose.json").is_file()
