"""Compression semantics (issue 2, "Semantics") against the independent reference implementation."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import compeft_reference as ref
import numpy as np
import pytest
import torch
from builders import ADAPTER_BASES, load_base, synthetic_adapter
from checks import (
    assert_tensors_identical,
    bytes_equal,
    check_artifact_against_reference,
    load_source,
    read_doc,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import compeft

CASES = sorted(ADAPTER_BASES)
SETTINGS = [("golomb", 0.1, 1.0), ("bitmask", 0.35, 2.5)]


@pytest.mark.parametrize("codec,density,alpha", SETTINGS, ids=[s[0] for s in SETTINGS])
@pytest.mark.parametrize("case", CASES)
def test_adapter_matches_reference(workshop, tmp_path, case, codec, density, alpha):
    """compeft.load of a compressed real PEFT adapter equals the reference reconstruction (mask, signs, s, dtypes, carried bits)."""
    adapter = workshop.adapter(case)
    dst = tmp_path / "art"
    result = compeft.compress(adapter.path, dst, density=density, alpha=alpha, codec=codec, device="cpu")
    source = load_source(adapter.path)
    r = check_artifact_against_reference(dst, source, density, alpha, codec)
    assert result.kept == r.tern.kept and result.d == r.d
    assert r.tern.kept >= r.tern.m


def test_adapter_kinds_are_what_they_claim(workshop):
    """The fixture adapters contain the tensor kinds the issue names (embeddings, DoRA magnitudes, IA3, heads, dtypes)."""
    keys = {c: set(load_source(workshop.adapter(c).path)) for c in CASES}
    assert any(k.endswith("embed_tokens.base_layer.weight") for k in keys["lora-embedding"])
    assert any("lora_embedding_A" in k for k in keys["lora-embedding"]) and any("lora_embedding_B" in k for k in keys["lora-embedding"])
    assert any(k.endswith("lora_magnitude_vector") for k in keys["dora"])
    assert all("ia3_l" in k for k in keys["ia3"]) and any("down_proj" in k for k in keys["ia3"])
    assert any(k.endswith("score.weight") for k in keys["seqcls-head"])
    bert = keys["bert-classifier"]
    assert any(k.endswith("classifier.weight") for k in bert) and any(k.endswith("classifier.bias") for k in bert)
    assert any("c_attn" in k for k in keys["gpt2-conv1d"])
    for case, dtype in (("lora-fp16", torch.float16), ("lora-bf16", torch.bfloat16)):
        assert {t.dtype for t in load_source(workshop.adapter(case).path).values()} == {dtype}
    mixed = load_source(workshop.adapter("seqcls-head-bf16-lora").path)
    assert {t.dtype for k, t in mixed.items() if "lora_" in k} == {torch.bfloat16}
    assert {t.dtype for k, t in mixed.items() if "score" in k} == {torch.float32}
    # rank_pattern took effect: q_proj rank 2, down_proj rank 6, others rank 4
    pat = load_source(workshop.adapter("lora-patterns").path)
    ranks = {k.split(".")[-3]: t.shape[0] for k, t in pat.items() if k.endswith("lora_A.weight")}
    assert ranks == {"q_proj": 2, "v_proj": 4, "down_proj": 6, "up_proj": 4}


def test_threshold_is_global_not_per_tensor(tmp_path):
    """One threshold over the whole adapter: a large-valued tensor is kept whole, a small one dropped."""
    gen = torch.Generator().manual_seed(3)
    big = torch.randn(8, 16, generator=gen).abs() + 10.0
    small = torch.randn(16, 8, generator=gen) * 0.01
    src = synthetic_adapter(tmp_path / "src", {"m.layer.lora_A.weight": big, "m.layer.lora_B.weight": small})
    compeft.compress(src, tmp_path / "art", density=0.5, device="cpu")
    out = compeft.load(tmp_path / "art")
    assert bool((out["m.layer.lora_A.weight"] != 0).all())
    assert bool((out["m.layer.lora_B.weight"] == 0).all())


def test_ties_at_threshold_are_all_kept(tmp_path):
    """Entries tied with the m-th largest magnitude are all kept (kept may exceed ceil(k·d))."""
    values = torch.tensor([[3.0, -3.0, 3.0, 1.0], [-1.0, 0.5, 3.0, -0.25]])
    src = synthetic_adapter(tmp_path / "src", {"x.lora_A.weight": values, "x.lora_B.weight": torch.tensor([[0.125], [-3.0]])})
    # d = 10, k = 0.2 -> m = 2; t = 3.0 and five entries have |τ| = 3
    compeft.compress(src, tmp_path / "art", density=0.2, device="cpu")
    doc = read_doc(tmp_path / "art")
    assert doc["kept"] == 5 and doc["threshold"] == 3.0
    check_artifact_against_reference(tmp_path / "art", load_source(src), 0.2, 1.0, "golomb")


@pytest.mark.parametrize("density,d,m", [(0.07, 100, 7), (0.14, 100, 14), (0.1, 30, 3), (0.29, 100, 29), (0.035, 200, 7), (1 / 3, 9, 3)])
def test_kept_count_is_exact_ceil_of_k_times_d(tmp_path, density, d, m):
    """m = ceil(k·d) exactly: density 0.07 on 100 distinct magnitudes keeps 7 entries, not 8 (no float round-up)."""
    assert ref.kept_count(density, d) == m
    values = torch.arange(1, d + 1, dtype=torch.float32) * torch.where(torch.arange(d) % 2 == 0, 1.0, -1.0)
    src = synthetic_adapter(tmp_path / "src", {"a.lora_A.weight": values.reshape(d, 1)})
    compeft.compress(src, tmp_path / "art", density=density, device="cpu")
    assert read_doc(tmp_path / "art")["kept"] == m


def test_ia3_theta_init_is_one(workshop, tmp_path):
    """(IA)3 vectors are rebuilt as 1 ± s (θ_init = 1); dropped entries are exactly 1."""
    compeft.compress(workshop.adapter("ia3").path, tmp_path / "art", density=0.25, device="cpu")
    s = read_doc(tmp_path / "art")["scale"]
    out = compeft.load(tmp_path / "art")
    values = torch.cat([t.reshape(-1) for t in out.values()])
    allowed = torch.tensor([1.0, ref.f32(1.0 + s), ref.f32(1.0 - s)])
    assert bool(torch.isin(values, allowed).all())
    assert 0 < int((values != 1.0).sum()) < values.numel()


def test_sigma_is_of_the_dense_task_vector(tmp_path):
    """σ is the unbiased std of the dense τ before sparsification (not of the kept entries)."""
    tau = torch.arange(1, 21, dtype=torch.float32).reshape(4, 5)
    src = synthetic_adapter(tmp_path / "src", {"a.lora_A.weight": tau})
    compeft.compress(src, tmp_path / "art", density=0.1, alpha=3.0, device="cpu")
    doc = read_doc(tmp_path / "art")
    sigma = float(np.std(np.arange(1, 21, dtype=np.float64), ddof=1))
    assert doc["sigma"] == ref.f32(sigma)
    assert doc["scale"] == ref.f32(3.0 * ref.f32(sigma))
    assert doc["kept"] == 2  # ceil(0.1 * 20)


DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@st.composite
def synthetic_tensors(draw):
    n = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    kinds = draw(st.sampled_from([["lora_A.weight", "lora_B.weight", "lora_embedding_A", "lora_embedding_B"], ["ia3_l"]]))
    for i in range(n):
        kind = draw(st.sampled_from(kinds))
        shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
        dtype = draw(st.sampled_from(DTYPES))
        style = draw(st.sampled_from(["normal", "ties", "sparse"]))
        x = torch.randn(shape, generator=gen)
        if style == "ties":
            x = torch.round(x * 2) / 4  # few distinct magnitudes: many ties
        elif style == "sparse":
            x = x * (torch.rand(shape, generator=gen) < 0.3)
        if kind == "ia3_l":
            x = (1.0 + 0.3 * x.clamp(-1, 1))
        tensors[f"base_model.model.layers.{i}.mod.{kind}"] = x.to(dtype)
    if draw(st.booleans()):
        tensors["base_model.model.head.modules_to_save.default.weight"] = torch.randn(3, 4, generator=gen).to(draw(st.sampled_from(DTYPES)))
    for j in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from([torch.float64, torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.float16,
                                      torch.bfloat16]))
        shape = draw(st.sampled_from([(), (0,), (0, 3), (5,), (2, 3)]))
        raw = torch.randint(-100, 100, shape, generator=gen) if not dtype.is_floating_point else torch.randn(shape, generator=gen) * 100
        if dtype == torch.bool:
            raw = raw > 0
        tensors[f"base_model.model.extra{j}.buffer"] = raw.to(dtype)
    return tensors


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    tensors=synthetic_tensors(),
    density=st.sampled_from([1e-3, 0.05, 0.07, 0.1, 0.14, 1 / 3, 0.5, 0.9, 1.0]),
    alpha=st.sampled_from([0.5, 1.0, 2.75]),
    codec=st.sampled_from(["golomb", "bitmask"]),
)
def test_random_adapters_match_reference(tensors, density, alpha, codec):
    """Random adapters (mixed dtypes, ties, zeros, IA3, carried heads) compress exactly as the reference says."""
    d = sum(t.numel() for k, t in tensors.items() if ref.theta_init(k) is not None)
    taus = torch.cat([(t.to(torch.float64) - ref.theta_init(k)).reshape(-1) for k, t in tensors.items() if ref.theta_init(k) is not None])
    if d < 2 or float(taus.abs().max()) == 0.0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        peft_type = "IA3" if any("ia3_l" in k for k in tensors) else "LORA"  # one family per adapter: its config says which
        src = synthetic_adapter(Path(tmp) / "src", tensors, peft_type)
        compeft.compress(src, Path(tmp) / "art", density=density, alpha=alpha, codec=codec, device="cpu")
        check_artifact_against_reference(Path(tmp) / "art", tensors, density, alpha, codec)


def _logits(model, kind):
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(3, 64, (2, 9), generator=gen)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _peft_model(kind, base_dir, adapter_dir):
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(kind, base_dir), str(adapter_dir))
    model.eval()
    return model


ROUND_TRIP = ["lora-all-linear", "lora-patterns", "gpt2-conv1d", "lora-embedding", "dora", "ia3", "seqcls-head",
              "bert-classifier", "lora-bf16", "lora-fp16"]


@pytest.mark.parametrize("case", ROUND_TRIP)
def test_decompress_loads_in_peft_with_reference_logits(workshop, tmp_path, case):
    """decompress → PeftModel.from_pretrained loads every tensor unchanged and gives the reference reconstruction's logits."""
    from peft.utils import get_peft_model_state_dict

    adapter = workshop.adapter(case)
    base_dir = workshop.base(adapter.base)
    density = 0.2
    compeft.compress(adapter.path, tmp_path / "art", density=density, device="cpu")
    out = compeft.decompress(tmp_path / "art", tmp_path / "dec", device="cpu")
    assert Path(out) == tmp_path / "dec"
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (tmp_path / "dec/adapter_config.json").read_bytes() == (adapter.path / "adapter_config.json").read_bytes()

    source = load_source(adapter.path)
    dec = load_file(str(tmp_path / "dec/adapter_model.safetensors"))
    # same key names, shapes, dtypes; equal to compeft.load; carried bit for bit
    assert_tensors_identical(dec, compeft.load(tmp_path / "art"), "decompress vs load")
    assert {k: (t.dtype, tuple(t.shape)) for k, t in dec.items()} == {k: (t.dtype, tuple(t.shape)) for k, t in source.items()}
    r = ref.reference_adapter(source, density)
    for name in r.carried:
        assert bytes_equal(dec[name], source[name]), name
    scale = read_doc(tmp_path / "art")["scale"]
    expected = r.reconstruct(s=scale)
    assert_tensors_identical(dec, expected, "decompressed vs reference")

    # the reference reconstruction as its own adapter directory
    ref_dir = tmp_path / "refdir"
    ref_dir.mkdir()
    shutil.copyfile(adapter.path / "adapter_config.json", ref_dir / "adapter_config.json")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in expected.items()}, str(ref_dir / "adapter_model.safetensors"), metadata={"format": "pt"})

    model = _peft_model(adapter.base, base_dir, tmp_path / "dec")
    sd = get_peft_model_state_dict(model, save_embedding_layers=case == "lora-embedding")
    missing = sorted(set(dec) - set(sd))
    assert not missing, f"tensors of the decompressed file not in the loaded model: {missing}"
    for k, t in dec.items():
        assert bytes_equal(sd[k].to(t.dtype).cpu(), t), f"{k} changed on loading into PeftModel"
    assert sorted(k for k in sd if ref.theta_init(k) is not None) == sorted(k for k in dec if ref.theta_init(k) is not None)

    logits = _logits(model, adapter.base)
    ref_logits = _logits(_peft_model(adapter.base, base_dir, ref_dir), adapter.base)
    base_logits = _logits(load_base(adapter.base, base_dir), adapter.base)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    assert not torch.allclose(logits, base_logits, atol=1e-6), "the decompressed adapter has no effect"


def test_large_adapter_matches_reference_across_blocks(tmp_path):
    """A 2.6M-parameter adapter (many 2^20 blocks, ties, zeros, mixed dtypes) matches the reference exactly, for any thread count."""
    gen = torch.Generator().manual_seed(99)
    tensors = {}
    for i, (shape, dtype) in enumerate([((1024, 700), torch.float32), ((700, 1024), torch.bfloat16), ((512, 1000), torch.float16),
                                        ((300, 1000), torch.float32)]):
        x = torch.randn(shape, generator=gen)
        if i == 1:
            x = torch.round(x * 8) / 8  # heavy ties
        if i == 3:
            x = x * (torch.rand(shape, generator=gen) < 0.2)  # mostly zeros
        tensors[f"base_model.model.layers.{i}.proj.lora_{'AB'[i % 2]}.weight"] = x.to(dtype)
    src = synthetic_adapter(tmp_path / "src", tensors)
    previous = torch.get_num_threads()
    try:
        blobs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            compeft.compress(src, tmp_path / f"art{threads}", density=0.03, alpha=1.5, device="cpu")
            blobs.append((tmp_path / f"art{threads}/compeft.safetensors").read_bytes())
    finally:
        torch.set_num_threads(previous)
    assert blobs[0] == blobs[1] == blobs[2], "output depends on the thread count"
    check_artifact_against_reference(tmp_path / "art1", tensors, 0.03, 1.5, "golomb")
