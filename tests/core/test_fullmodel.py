"""Full fine-tune residuals (issue 2, "Full fine-tune residuals"): τ = θ_ft − θ_base over shared floating tensors, others carried."""

from __future__ import annotations

import json
from pathlib import Path

import compeft_reference as ref
import pytest
import torch
from builders import llama_config
from checks import assert_tensors_identical, read_doc
from safetensors.torch import load_file

import compeft
from compeft.cli import main
from compeft.errors import InputError

FULL_CASES = ["sharded", "single", "resized", "single-bf16", "bf16-on-fp32-base"]


def read_model_dir(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face model directory (single file or sharded with an index)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out: dict[str, torch.Tensor] = {}
    for f in files:
        part = load_file(str(path / f))
        assert not set(part) & set(out), f"{f} repeats tensors"
        out.update(part)
    return out


def _config(vocab: int = 128):
    return llama_config(vocab_size=vocab, hidden_size=32, intermediate_size=64, max_position_embeddings=64)


class FullModels:
    """Base and fine-tuned tiny Llama directories, built once per session."""

    def __init__(self, root: Path) -> None:
        from transformers import LlamaForCausalLM

        self.root = root
        torch.manual_seed(2024)
        base = LlamaForCausalLM(_config())
        self.base_sharded = root / "base-sharded"
        self.base_single = root / "base-single"
        base.save_pretrained(self.base_sharded, max_shard_size="50KB")
        base.save_pretrained(self.base_single)
        self.base_bf16 = root / "base-bf16"
        base.to(torch.bfloat16).save_pretrained(self.base_bf16)
        self.dirs: dict[str, tuple[Path, Path]] = {}
        for case in FULL_CASES:
            torch.manual_seed(2024)
            ft = LlamaForCausalLM(_config())
            gen = torch.Generator().manual_seed(len(case))
            if case == "resized":
                ft.resize_token_embeddings(136)
            with torch.no_grad():
                for p in ft.parameters():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.01)
            out = root / f"ft-{case}"
            if case == "bf16-on-fp32-base":
                ft.to(torch.bfloat16).save_pretrained(out, max_shard_size="50KB")
                self.dirs[case] = (out, self.base_single)
            elif case == "single-bf16":
                ft.to(torch.bfloat16).save_pretrained(out)
                self.dirs[case] = (out, self.base_bf16)
            elif case == "single":
                ft.save_pretrained(out)
                self.dirs[case] = (out, self.base_single)
            else:
                ft.save_pretrained(out, max_shard_size="50KB")
                self.dirs[case] = (out, self.base_sharded)


@pytest.fixture(scope="module")
def full_models(tmp_path_factory) -> FullModels:
    return FullModels(tmp_path_factory.mktemp("full"))


def test_fixture_models_are_sharded(full_models):
    """The sharded fixtures really are several safetensors files with an index; the single ones are one file."""
    for path in (full_models.base_sharded, full_models.dirs["sharded"][0]):
        index = json.loads((path / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) >= 2
    assert (full_models.base_single / "model.safetensors").is_file()
    assert not (full_models.base_single / "model.safetensors.index.json").exists()


def _logits(model):
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(3, 128, (2, 10), generator=gen)
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("case", FULL_CASES)
def test_full_residual_round_trip_matches_reference(full_models, tmp_path, case):
    """compress(ft, base=) → decompress(base=) writes a model dir that from_pretrained loads, equal to the reference θ_base +
    s·sign·mask."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    ft_dir, base_dir = full_models.dirs[case]
    density, alpha = 0.1, 1.25
    compeft.compress(ft_dir, tmp_path / "art", base=base_dir, density=density, alpha=alpha, device="cpu")
    doc = read_doc(tmp_path / "art")
    assert doc["kind"] == "full"
    base, ft = read_model_dir(base_dir), read_model_dir(ft_dir)
    r = ref.reference_full(base, ft, density, alpha)
    assert doc["d"] == r.tern.tau.size
    assert doc["kept"] == r.tern.kept
    assert abs(doc["scale"] - r.scale) <= ref.ulp32(r.scale)
    if case == "resized":
        assert sorted(r.carried) == ["lm_head.weight", "model.embed_tokens.weight"]
    else:
        assert r.carried == []
    info = compeft.inspect(tmp_path / "art")
    assert info.kind == "full" and info.kept == r.tern.kept

    out = compeft.decompress(tmp_path / "art", tmp_path / "model", base=base_dir, device="cpu")
    assert Path(out) == tmp_path / "model"
    got = read_model_dir(tmp_path / "model")
    expected = r.reconstruct(s=doc["scale"])
    assert_tensors_identical(got, expected, f"full {case}")
    if case in ("sharded", "resized"):
        index = json.loads((tmp_path / "model/model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(got)

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    config = AutoModelForCausalLM.from_pretrained(ft_dir).config
    reference_model = LlamaForCausalLM(config).to(torch.float32)
    reference_model.load_state_dict({k: v.to(torch.float32) for k, v in expected.items()}, strict=True)
    reference_model.eval()
    torch.testing.assert_close(_logits(model), _logits(reference_model), rtol=0, atol=0)


@pytest.fixture(scope="module")
def sharded_artifact(full_models, tmp_path_factory) -> Path:
    ft_dir, base_dir = full_models.dirs["sharded"]
    dst = tmp_path_factory.mktemp("full-art") / "art"
    compeft.compress(ft_dir, dst, base=base_dir, density=0.05, device="cpu")
    return dst


def test_full_residual_is_deterministic(full_models, sharded_artifact, tmp_path):
    """Compressing the same fine-tune twice gives byte-identical compeft.safetensors."""
    ft_dir, base_dir = full_models.dirs["sharded"]
    compeft.compress(ft_dir, tmp_path / "b", base=base_dir, density=0.05, device="cpu")
    assert (sharded_artifact / "compeft.safetensors").read_bytes() == (tmp_path / "b/compeft.safetensors").read_bytes()


def test_decompress_with_the_wrong_base_is_refused(full_models, sharded_artifact, tmp_path):
    """decompress against a base other than the one compressed against (other weights, one changed tensor) is refused; no DST is left."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(77)
    other = tmp_path / "other-base"
    LlamaForCausalLM(_config()).save_pretrained(other, max_shard_size="50KB")
    nudged = tmp_path / "nudged-base"
    tensors = read_model_dir(full_models.base_single)
    name = "model.layers.1.mlp.up_proj.weight"
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    nudged.mkdir()
    (nudged / "config.json").write_bytes((full_models.base_single / "config.json").read_bytes())
    from safetensors.torch import save_file

    save_file(tensors, str(nudged / "model.safetensors"), metadata={"format": "pt"})
    for base in (other, nudged):
        with pytest.raises(InputError) as info:
            compeft.decompress(sharded_artifact, tmp_path / "out", base=base, device="cpu")
        assert str(base) in str(info.value)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    # the right base, given as a single file instead of shards, is accepted
    compeft.decompress(sharded_artifact, tmp_path / "ok", base=full_models.base_single, device="cpu")
    assert (tmp_path / "ok/config.json").is_file()


def test_full_artifact_needs_base(full_models, tmp_path, capsys):
    """A full residual artifact is refused by load() and by decompress without --base (exit 2, one line)."""
    ft_dir, base_dir = full_models.dirs["single"]
    code = main(["compress", str(ft_dir), str(tmp_path / "art"), "--base", str(base_dir), "--device", "cpu", "--density", "0.2"])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 1 and err == ""
    with pytest.raises(InputError):
        compeft.load(tmp_path / "art")
    with pytest.raises(InputError):
        compeft.decompress(tmp_path / "art", tmp_path / "out", device="cpu")
    code = main(["decompress", str(tmp_path / "art"), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_full_residual_refuses_pickled_checkpoints(full_models, tmp_path, capsys):
    """A fine-tune directory with only pytorch_model.bin is refused with exit 2 and one line."""
    ft = tmp_path / "ft"
    ft.mkdir()
    (ft / "config.json").write_bytes((full_models.dirs["single"][0] / "config.json").read_bytes())
    (ft / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    code = main(["compress", str(ft), str(tmp_path / "art"), "--base", str(full_models.base_single), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "art").exists()


def test_progress_only_on_a_terminal(full_models, tmp_path, capsys, monkeypatch):
    """compress --base shows progress on stderr when it is a terminal (and stdout keeps its one summary line)."""
    import sys

    ft_dir, base_dir = full_models.dirs["single"]
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code = main(["compress", str(ft_dir), str(tmp_path / "art"), "--base", str(base_dir), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.splitlines()) == 1
    assert err.strip(), "no progress shown on a terminal"
