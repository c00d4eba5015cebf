"""compeft.serving.hotswap: bit-identical to ``PeftModel.from_pretrained(base, decompressed_dir)`` per family,
configuration carried over (alphas, patterns), mismatches refused without touching the live adapter, and
torch.compile'd models swapped without recompiling."""

from __future__ import annotations

import pytest
import torch
from serving_cases import outputs

from compeft.errors import AdapterMismatchError, InputError
from compeft.fastload import ResidentArtifact
from compeft.serving import hotswap

FAMILIES = ["lora-all-linear", "lora-patterns", "dora", "ia3", "gpt2-conv1d", "seqcls-head", "lora-bf16"]


def adapter_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "default" in n}


@pytest.mark.parametrize("family", FAMILIES)
def test_hotswap_is_from_pretrained_of_the_decompressed_adapter(serving_cases, family):
    case = serving_cases(family)
    live = case.live("a")
    hotswap(live, case.adapter("b", seed=1)[1])  # from the directory
    assert torch.equal(outputs(live), case.reference("b"))
    hotswap(live, ResidentArtifact.open(case.adapter("a")[1]))  # and back, from host memory
    assert torch.equal(outputs(live), case.reference("a"))


def test_alpha_and_rslora_are_carried_over(serving_cases):
    case = serving_cases("lora-patterns")
    live = case.live("a")
    for key, changes in [("alpha", {"lora_alpha": 3, "alpha_pattern": {"v_proj": 5}}), ("rslora", {"use_rslora": True})]:
        hotswap(live, case.adapter(key, seed=2, **changes)[1])
        assert torch.equal(outputs(live), case.reference(key))
        assert live.peft_config["default"].use_rslora is changes.get("use_rslora", False)


@pytest.mark.parametrize("other, fragment", [
    ("ia3", "it is a IA3 adapter, the live one is LORA"),
    ("dora", "tensor"),
    ("lora-patterns", "tensor"),
])
def test_other_structure_is_refused_and_the_live_adapter_kept(serving_cases, other, fragment):
    case = serving_cases("lora-all-linear")
    live = case.live("a")
    before, state = outputs(live), adapter_state(live)
    with pytest.raises(AdapterMismatchError) as err:
        hotswap(live, serving_cases(other).adapter("a")[1])
    message = str(err.value)
    assert "\n" not in message and "does not fit the live adapter 'default'" in message and fragment in message
    assert torch.equal(outputs(live), before)
    assert all(torch.equal(p, state[n]) for n, p in adapter_state(live).items())


def test_other_rank_and_options_are_refused(serving_cases):
    case = serving_cases("lora-patterns")
    live = case.live("a")
    before = outputs(live)
    src = case.adapter("a")[0]
    from serving_cases import variant

    from compeft import api

    dora = api.compress(variant(src, case.root / "dora-src", 3, use_dora=True), case.root / "dora-art", density=0.5)
    with pytest.raises(AdapterMismatchError, match="use_dora is true, the live adapter's is false"):
        hotswap(live, dora.path)
    mica = api.compress(variant(src, case.root / "mica-src", 3, init_lora_weights="mica"), case.root / "mica-art",
                        density=0.5)
    with pytest.raises(AdapterMismatchError, match="init_lora_weights"):
        hotswap(live, mica.path)
    assert torch.equal(outputs(live), before)


def test_a_smaller_rank_is_refused_unless_prepared_for_compiled_hotswap(serving_cases):
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    case = serving_cases("lora-all-linear")
    live = case.live("a")
    low = case.adapter("rank2", seed=4, rank=2)[1]
    with pytest.raises(AdapterMismatchError, match=r"has shape \(2, 32\), the live one \(4, 32\)"):
        hotswap(live, low)
    prepare_model_for_compiled_hotswap(live, target_rank=4)
    hotswap(live, low)  # padded with zeros, as peft's own hotswap does
    assert torch.allclose(outputs(live), case.reference("rank2"), atol=1e-6, rtol=0)
    hotswap(live, case.adapter("a")[1])
    assert torch.equal(outputs(live), case.reference("a"))


def test_missing_config_and_bad_sources_are_one_line_errors(serving_cases, tmp_path):
    case = serving_cases("lora-all-linear")
    live = case.live("a")
    art = case.adapter("a")[1]
    data = torch.frombuffer(bytearray((art / "compeft.safetensors").read_bytes()), dtype=torch.uint8)
    with pytest.raises(InputError, match="no adapter_config.json"):
        hotswap(live, ResidentArtifact(data, label="mem"))
    with pytest.raises(InputError, match="no such artifact directory"):
        hotswap(live, tmp_path / "nowhere")
    with pytest.raises(InputError, match="no adapter 'other'"):
        hotswap(live, art, adapter_name="other")
    with pytest.raises(InputError, match="PeftModel"):
        hotswap(live.get_base_model(), art)


def test_compiled_model_swaps_without_recompiling(serving_cases):
    """Bound before compiling, swaps of other values, alphas and (after peft's prepare_model_for_compiled_hotswap)
    smaller ranks run the compiled graph again: torch._dynamo raises on any recompilation."""
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    case = serving_cases("lora-all-linear")
    live = case.live("a")
    prepare_model_for_compiled_hotswap(live, target_rank=4)
    hotswap(live, case.adapter("a")[1])  # binds the adapter before compiling
    compiled = torch.compile(live, backend="eager")
    outputs(compiled)
    keys = [("b", {}), ("alpha", {"lora_alpha": 3}), ("rank2", {"rank": 2})]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for key, changes in keys:
            hotswap(compiled, case.adapter(key, seed=5 if key != "rank2" else 4, **changes)[1])
            assert torch.allclose(outputs(compiled), case.reference(key), atol=1e-6, rtol=0)
            if key != "rank2":
                assert torch.equal(outputs(compiled), case.reference(key))
