"""compeft.serving on CUDA: the same parameters as on the CPU, outputs identical to peft's load of the decompressed
adapter, and an inductor-compiled model swapped without recompiling."""

from __future__ import annotations

import pytest
import torch
from serving_cases import outputs

from compeft.fastload import ResidentArtifact
from compeft.serving import AdapterPool, hotswap

pytestmark = pytest.mark.gpu


def adapter_params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu() for n, p in model.named_parameters() if ".default" in n}


@pytest.mark.parametrize("family", ["lora-all-linear", "dora", "ia3", "lora-bf16"])
def test_cuda_swap_equals_cpu_swap_and_peft_load(serving_cases, family):
    case = serving_cases(family)
    cpu, cuda = case.live("a"), case.live("a", "cuda")
    artifact = ResidentArtifact.open(case.adapter("b", seed=1)[1])
    hotswap(cpu, artifact)
    hotswap(cuda, artifact)
    on_cpu, on_cuda = adapter_params(cpu), adapter_params(cuda)
    assert on_cpu.keys() == on_cuda.keys() and all(torch.equal(on_cpu[k], on_cuda[k]) for k in on_cpu)
    assert torch.equal(outputs(cuda, "cuda"), case.reference("b", "cuda"))


def test_pool_on_cuda(serving_cases):
    case = serving_cases("lora-all-linear")
    pool = AdapterPool(case.live("a", "cuda"), gpu_slots=2)
    for key, seed in (("a", None), ("b", 1), ("c", 11)):
        pool.add(key, case.adapter(key, seed=seed)[1])
    for key in ("a", "b", "c", "a", "b"):
        pool.activate(key)
        assert torch.equal(outputs(pool.model, "cuda"), case.reference(key, "cuda")), key


def test_inductor_compiled_model_swaps_without_recompiling(serving_cases):
    from peft.utils.hotswap import prepare_model_for_compiled_hotswap

    case = serving_cases("lora-all-linear")
    live = case.live("a", "cuda")
    prepare_model_for_compiled_hotswap(live, target_rank=4)
    pool = AdapterPool(live)  # binds the slot before compiling
    compiled = torch.compile(live)
    pool.model = compiled
    for key, seed, changes in (("a", None, {}), ("b", 1, {}), ("alpha", 2, {"lora_alpha": 3}), ("rank2", 4, {"rank": 2})):
        pool.add(key, case.adapter(key, seed=seed, **changes)[1])
    pool.activate("a")
    outputs(compiled, "cuda")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for key in ("b", "alpha", "rank2", "a"):
            pool.activate(key)
            assert torch.allclose(outputs(compiled, "cuda"), case.reference(key, "cuda"), atol=1e-5, rtol=1e-5), key
