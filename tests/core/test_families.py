"""Every peft adapter type (issue 12, "Adapter families"): built with peft on a tiny LLaMA, "trained" (every
trainable tensor moved), saved, compressed and decompressed, then loaded with ``PeftModel.from_pretrained``.
The decompressed file must equal the independent reference reconstruction θ_init + s·t under the rule stated in
family_cases.py (carried and integer tensors bit for bit), peft must load every tensor unchanged, and its outputs
must equal those of the reference reconstruction loaded the same way. Refused types and LoRA inits fail through the
CLI with one line and exit code 2."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import compeft_reference as ref
import pytest
import torch
from checks import assert_tensors_identical, bytes_equal, check_artifact_against_reference, load_source, read_doc
from family_cases import CASES, EDITED_REFUSALS, Case
from safetensors.torch import load_file, save_file
from test_cli import assert_one_line_error, run_cli

import compeft
from compeft.families import FAMILIES

DENSITY = 0.3
COMPRESSED = [c for c in CASES if not c.refused]
REFUSED = [c for c in CASES if c.refused]


def tiny_llama(seed: int = 7):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0, use_cache=False)
    return LlamaForCausalLM(config).eval()


def peft_config(case: Case):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING[case.peft_type](**case.config)


def build(case: Case, out: Path, tmp: Path) -> dict[str, torch.Tensor]:
    """Save ``case``'s adapter, as peft writes it after training, into ``out``; returns its fresh (untrained) state."""
    from peft import get_peft_model
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.peft_type == "XLORA":
            model = xlora_model(tmp)
        else:
            model = get_peft_model(tiny_llama(), peft_config(case))
        fresh = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        gen = torch.Generator().manual_seed(3)
        with torch.no_grad():  # "training": every trainable tensor moves
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))
        model.save_pretrained(str(out))
    return fresh


def xlora_model(tmp: Path):
    """An X-LoRA model over two LoRA experts saved beside it (the classifier is what X-LoRA itself saves)."""
    from peft import LoraConfig, XLoraConfig, get_peft_model

    experts = {}
    for i in range(2):
        lora = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "v_proj"], r=4, init_lora_weights=False))
        lora.save_pretrained(str(tmp / f"expert{i}"))
        experts[str(i)] = str(tmp / f"expert{i}")
    return get_peft_model(tiny_llama(), XLoraConfig(task_type="CAUSAL_LM", hidden_size=32, adapters=experts, xlora_size=8))


def load_peft(adapter_dir: Path):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(tiny_llama(), str(adapter_dir)).eval()


def logits(model, case: Case) -> torch.Tensor:
    ids = torch.randint(3, 64, (2, 6), generator=torch.Generator().manual_seed(11))
    extra = {k: torch.tensor(v) for k, v in case.forward.items()}
    if case.peft_type == "POLY":  # PeftModel.forward drops task_ids for non-prompt types; PolyModel takes them
        model = model.base_model
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits


@pytest.mark.parametrize("case", COMPRESSED, ids=[c.name for c in COMPRESSED])
def test_family_round_trip_loads_in_peft(case, tmp_path):
    from peft.utils import get_peft_model_state_dict

    src = tmp_path / "src"
    fresh = build(case, src, tmp_path)
    source = load_source(src)
    theta = {k: case.theta(k, tuple(t.shape)) for k, t in source.items()}

    # the rule as stated: constant θ_init are peft's fresh values; every key is a delta or a named carried tensor
    for key, t in fresh.items():
        parts = key.split(".")
        const = next((case.const[p] for p in reversed(parts) if p in case.const), None)
        if theta.get(key) is not None and const is not None:
            assert torch.equal(t.float(), torch.full_like(t.float(), theta[key])), f"{key}: peft starts it away from {theta[key]}"
    for key in source:
        parts = set(key.split("."))
        assert theta[key] is not None or parts & set(case.carried), f"{key}: neither a stated delta nor a stated carried tensor"
    assert any(v is not None for v in theta.values())

    info = compeft.compress(src, tmp_path / "art", density=DENSITY, device="cpu")
    assert info.peft_type == case.peft_type or (case.peft_type, info.peft_type) == ("LORA", "DORA")
    r = check_artifact_against_reference(tmp_path / "art", source, DENSITY, 1.0, "golomb", theta=theta.get)
    compeft.decompress(tmp_path / "art", tmp_path / "dec", device="cpu")
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    dec = load_file(str(tmp_path / "dec/adapter_model.safetensors"))
    expected = r.reconstruct(s=read_doc(tmp_path / "art")["scale"])
    assert_tensors_identical(dec, expected, "decompressed vs reference")
    for name in r.carried:
        assert bytes_equal(dec[name], source[name]), f"carried {name} changed"

    ref_dir = tmp_path / "refdir"  # the reference reconstruction as its own adapter directory
    ref_dir.mkdir()
    shutil.copyfile(src / "adapter_config.json", ref_dir / "adapter_config.json")
    for extra in src.iterdir():  # X-LoRA keeps its experts in subfolders
        if extra.is_dir():
            shutil.copytree(extra, ref_dir / extra.name)
            shutil.copytree(extra, tmp_path / "dec" / extra.name)
    save_file({k: v.contiguous() for k, v in expected.items()}, str(ref_dir / "adapter_model.safetensors"), metadata={"format": "pt"})

    model = load_peft(tmp_path / "dec")
    if not case.prompt and case.peft_type != "XLORA":
        loaded = get_peft_model_state_dict(model)
        for k, t in dec.items():
            assert k in loaded, f"{k} was not loaded by peft"
            assert bytes_equal(loaded[k].to(t.dtype).cpu(), t), f"{k} changed on loading into PeftModel"
    if case.no_forward:
        pytest.skip(f"outputs not compared: {case.no_forward}")
    out = logits(model, case)
    torch.testing.assert_close(out, logits(load_peft(ref_dir), case), rtol=0, atol=0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused_family_is_one_line_error(case, tmp_path, capsys):
    build(case, tmp_path / "src", tmp_path)
    code, out, err = run_cli(capsys, "compress", tmp_path / "src", tmp_path / "art", "--device", "cpu")
    assert_one_line_error(code, out, err, 2, case.peft_type, case.refused)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("init", sorted(EDITED_REFUSALS))
def test_lora_inits_from_the_base_are_refused(init, tmp_path, capsys):
    build(CASES[0], tmp_path / "src", tmp_path)
    config = json.loads((tmp_path / "src/adapter_config.json").read_text())
    (tmp_path / "src/adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": init}))
    code, out, err = run_cli(capsys, "compress", tmp_path / "src", tmp_path / "art", "--device", "cpu")
    assert_one_line_error(code, out, err, 2, "init_lora_weights", EDITED_REFUSALS[init])


def test_converted_pissa_is_an_ordinary_lora(tmp_path):
    """PiSSA saved with path_initial_model_for_weight_conversion is a LoRA of rank 2r on the untouched base:
    it compresses, and the decompressed adapter loads on the original base with the reference's outputs."""
    from peft import LoraConfig, get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(tiny_llama(), LoraConfig(target_modules=["q_proj", "v_proj"], r=4, init_lora_weights="pissa"))
        model.peft_config["default"].init_lora_weights = True  # as peft's docs say, before saving the initial adapter
        model.save_pretrained(str(tmp_path / "init"))
        model.peft_config["default"].init_lora_weights = "pissa"
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
        model.save_pretrained(str(tmp_path / "src"), path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    config = json.loads((tmp_path / "src/adapter_config.json").read_text())
    assert config["init_lora_weights"] is True and config["r"] == 8
    compeft.compress(tmp_path / "src", tmp_path / "art", density=DENSITY, device="cpu")
    source = load_source(tmp_path / "src")
    r = check_artifact_against_reference(tmp_path / "art", source, DENSITY, 1.0, "golomb")
    assert r.names == sorted(source)  # every factor is a delta from 0, nothing carried
    compeft.decompress(tmp_path / "art", tmp_path / "dec", device="cpu")
    load_peft(tmp_path / "dec")


def test_every_peft_type_has_a_family():
    """The registry covers every PeftType of the pinned peft; the tests build every one of them."""
    from peft import PeftType

    assert set(FAMILIES) == {t.value for t in PeftType}
    assert {c.peft_type for c in CASES} == set(FAMILIES)
    assert {c.peft_type for c in REFUSED if c.peft_type != "LORA"} == {n for n, f in FAMILIES.items() if f.refused}
    table = (Path(__file__).resolve().parents[2] / "docs" / "families.md").read_text()
    assert all(f"| `{name}` |" in table for name in FAMILIES), "docs/families.md lacks a row"


def test_reference_rule_is_compeft_rule_for_lora_and_ia3():
    """The LoRA/(IA)3 reference of the older tests agrees with the stated cases (one rule, stated twice)."""
    for case in CASES[:1] + [c for c in CASES if c.peft_type == "IA3"]:
        for part in (*case.const, *case.random):
            key = f"base_model.model.x.{part}.weight"
            assert ref.theta_init(key) == case.theta(key, (1,))
