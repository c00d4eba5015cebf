"""compeft.ops.merge and `compeft merge`: task arithmetic and TIES equal an independent dense implementation;
PEFT output (θ_init + τ per tensor dtype, config and card) and compressed output; clear one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

import compeft
from compeft.adapters import read_adapter
from compeft.cli import main
from compeft.errors import InputError, OptionError
from compeft.ops import merge
from tests.ops.conftest import adapter_tensors, make_artifact
from tests.ops.reference import dense_merge, dense_tau

SPECS = ({"seed": 1}, {"seed": 2, "shared": 1, "mix": 0.6, "density": 0.2}, {"seed": 3, "codec": "bitmask", "density": 0.5})


def merged_tau(adapter_dir) -> torch.Tensor:
    adapter = read_adapter(adapter_dir)
    return torch.cat([(adapter.tensors[n].to(torch.float64) - theta).reshape(-1)
                      for n, theta in sorted(adapter.theta_inits.items())])


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
@pytest.mark.parametrize("weights,lam", [(None, 1.0), ([0.5, 1.5, -0.7], 0.8)])
def test_merge_equals_the_dense_definition(artifacts, tmp_path, method, weights, lam):
    paths = artifacts(*SPECS)
    result = merge(paths, tmp_path / "merged", method=method, weights=weights, lam=lam, device="cpu")
    expected = dense_merge(paths, method, weights or [1.0] * 3, lam)
    torch.testing.assert_close(merged_tau(tmp_path / "merged"), expected, rtol=1e-6, atol=1e-7)
    assert result.support == int((expected != 0).sum()) and [i.weight for i in result.inputs] == (weights or [1.0] * 3)
    if method == "ties":  # the elected sign is never contradicted and each entry is a mean of agreeing inputs
        assert not torch.equal(expected, dense_merge(paths, "task_arithmetic", weights or [1.0] * 3, lam))


def test_peft_output_is_a_standard_adapter_with_the_first_config_and_a_card(artifacts, tmp_path):
    paths = [make_artifact(tmp_path, f"bf{i}", adapter_tensors(i, dtype=torch.bfloat16)) for i in range(2)]
    merge(paths, tmp_path / "out", method="task_arithmetic", device="cpu")
    out = read_adapter(tmp_path / "out")
    assert {t.dtype for t in out.tensors.values()} == {torch.bfloat16}
    assert (tmp_path / "out" / "adapter_config.json").read_bytes() == (paths[0] / "adapter_config.json").read_bytes()
    expected = dense_merge(paths, "task_arithmetic", [1.0, 1.0], 1.0)
    torch.testing.assert_close(merged_tau(tmp_path / "out"), expected.to(torch.bfloat16).to(torch.float64))
    card = (tmp_path / "out" / "README.md").read_text()
    assert "task_arithmetic" in card and all(str(p) in card for p in paths) and "library_name: peft" in card


def test_ia3_entries_merge_around_theta_init_one(tmp_path):
    config = {"peft_type": "IA3", "base_model_name_or_path": "tiny/base", "target_modules": ["k"], "task_type": "CAUSAL_LM",
              "feedforward_modules": []}
    paths = [make_artifact(tmp_path, f"ia3-{i}", {"m.k.ia3_l": 1 + 0.1 * torch.randn(1, 77, generator=torch.Generator().manual_seed(i))},
                           config=config) for i in range(2)]
    merge(paths, tmp_path / "out", method="ties", device="cpu")
    torch.testing.assert_close(merged_tau(tmp_path / "out"), dense_merge(paths, "ties", [1.0, 1.0], 1.0), rtol=1e-6, atol=1e-7)


def test_compressed_output_keeps_the_merge_support_and_scale(artifacts, tmp_path):
    paths = artifacts(*SPECS)
    result = merge(paths, tmp_path / "art", method="ties", to="compeft", device="cpu")
    tau = dense_merge(paths, "ties", [1.0] * 3, 1.0)
    t, _, scale = dense_tau(tmp_path / "art")
    info = result.artifact
    assert info.kept == int((tau != 0).sum()) and torch.equal(t, torch.sign(tau))  # every entry kept, signs exact
    assert scale == pytest.approx(float(tau.abs().sum() / (tau != 0).sum()), rel=1e-6)  # mean kept magnitude
    doc_lineage = info.source["merge"]
    assert doc_lineage["method"] == "ties" and [i["path"] for i in doc_lineage["inputs"]] == [str(p) for p in paths]
    assert "Made by **merge**" in (tmp_path / "art" / "README.md").read_text()
    half = merge(paths, tmp_path / "half", method="ties", to="compeft", density=0.1, alpha=2.0, device="cpu")
    assert half.artifact.density == 0.1 and half.artifact.alpha == 2.0 and half.artifact.kept < info.kept
    compeft.decompress(tmp_path / "art", tmp_path / "restored", device="cpu")


def test_errors_are_one_line(artifacts, tmp_path, capsys):
    a, b = artifacts({"seed": 1}, {"seed": 2})
    with pytest.raises(OptionError, match="2 input"):
        merge([a, b], tmp_path / "x", method="ties", weights=[1.0], device="cpu")
    with pytest.raises(OptionError, match="compeft only"):
        merge([a, b], tmp_path / "x", method="ties", density=0.1, device="cpu")
    with pytest.raises(OptionError, match="method"):
        merge([a, b], tmp_path / "x", method="dare", device="cpu")
    odd = make_artifact(tmp_path, "odd", {**adapter_tensors(3), "c.lora_A.weight": torch.ones(2, 2)})
    assert main(["merge", str(a), str(odd), "--method", "ties", "--out", str(tmp_path / "y")]) == 2
    assert "cannot be compared or merged" in capsys.readouterr().err
    head = {**adapter_tensors(4), "head.weight": torch.ones(3)}
    with_head = [make_artifact(tmp_path, f"h{i}", {**head, "head.weight": torch.full((3,), float(i))}) for i in range(2)]
    with pytest.raises(InputError, match="carried tensor 'head.weight' differs"):
        merge(with_head, tmp_path / "z", method="task_arithmetic", device="cpu")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
    (tmp_path / "taken").mkdir()
    assert main(["merge", str(a), str(b), "--method", "ties", "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_merge_json(artifacts, tmp_path, capsys):
    a, b = artifacts({"seed": 1}, {"seed": 2})
    code = main(["merge", str(a), str(b), "--method", "task_arithmetic", "--weights", "0.3,0.7", "--lam", "2",
                 "--to", "compeft", "--out", str(tmp_path / "m"), "--json", "--device", "cpu"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "task_arithmetic" and [i["weight"] for i in data["inputs"]] == [0.3, 0.7]
    assert data["artifact"]["kept"] == data["support"]
