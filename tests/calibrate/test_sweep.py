"""Real calibrations on the fixture adapters (lm-eval on the tiny model, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

import compeft
from compeft.calibrate.sweep import calibrate

# How close a calibrated artifact must score to the original adapter, per (fixture, density): the bundled
# fixtures' measured behaviour (docs/calibration.md). On a 109-token model with 512 (IA)³ entries or
# 74k LoRA entries, k = 0.1 keeps too little to recover fully; the full residual comes closest.
MARGIN = {("ia3-next", 0.3): 0.15, ("full-color", 0.1): 0.25, ("lora-plus", 0.1): 0.5, ("lora-plus", 0.3): 0.05}


@pytest.fixture(scope="module")
def ia3_run(catalog, tmp_path_factory):
    """Calibrate the (IA)³ adapter at k = 0.3 over a grid that includes α = 1."""
    fixture = catalog.adapter("ia3-next")
    dst = tmp_path_factory.mktemp("ia3") / "artifact"
    result = calibrate(fixture.path, dst, base=catalog.base_dir, task=str(fixture.task_yaml), densities=[0.3],
                       alphas=[0.5, 1, 2, 4, 10], search="grid", device="cpu")
    return fixture, dst, result


def test_calibrated_alpha_beats_alpha_one_and_nears_the_original(ia3_run):
    _, _, result = ia3_run
    by_alpha = {p.alpha: p for p in result.points}
    chosen = result.chosen
    assert chosen.density == 0.3
    assert chosen.score > by_alpha[1.0].score
    assert chosen.score >= result.reference.value - MARGIN["ia3-next", 0.3]
    # a badly chosen α clearly hurts
    assert min(p.score for p in result.points) <= chosen.score - 0.15
    assert chosen.score == max(p.score for p in result.points)


@pytest.mark.parametrize(("density", "gain"), [(0.1, 0.25), (0.3, 0.5)])
def test_lora_calibration(catalog, density, gain):
    """The balanced rank-64 LoRA: α = 1 is near chance at k = 0.1 and 0.3; a calibrated α recovers part of
    the original's score at k = 0.1 and all of it at k = 0.3."""
    fixture = catalog.adapter("lora-plus")
    result = calibrate(fixture.path, None, base=catalog.base_dir, task=str(fixture.task_yaml), densities=[density],
                       alphas=[1, 2, 3, 4], search="grid", device="cpu")
    by_alpha = {p.alpha: p.score for p in result.points}
    assert result.chosen.alpha > 1 and result.chosen.score >= by_alpha[1.0] + gain
    assert result.chosen.score >= result.reference.value - MARGIN["lora-plus", density]


def test_report_agrees_with_the_written_artifact(ia3_run, tmp_path, score_adapter_dir):
    fixture, dst, result = ia3_run
    doc = json.loads((dst / "calibration.json").read_text())
    assert doc["chosen"]["alpha"] == result.chosen.alpha and doc["chosen"]["density"] == 0.3
    assert len(doc["points"]) == 5 and all({"density", "alpha", "score", "stderr", "bytes"} <= set(p) for p in doc["points"])
    assert doc["reference"]["value"] == result.reference.value
    assert doc["artifact"]["bytes_artifact"] == compeft.inspect(dst).bytes_artifact
    assert abs(doc["artifact"]["bytes_artifact"] - doc["chosen"]["bytes"]) <= 16  # α only changes the header
    assert set(doc["timings"]) >= {"load", "evaluations", "sweep", "total", "overhead_ratio"}
    assert (dst / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # decompress -> load -> evaluate gives the recorded score exactly
    restored = compeft.decompress(dst, tmp_path / "restored", device="cpu")
    direct = score_adapter_dir(restored, fixture.task_yaml)
    assert direct.value == doc["chosen"]["score"]


def test_swept_weights_equal_the_artifact_weights(ia3_run, catalog):
    """The in-place update writes exactly what compeft.load reconstructs (same float32 arithmetic)."""
    from compeft.calibrate.model import load_model
    from compeft.calibrate.patterns import PatternFactory

    fixture, dst, result = ia3_run
    loaded = load_model(fixture.path, str(catalog.base_dir), torch.device("cpu"))
    factory = PatternFactory(fixture.path, loaded, base_dir=None, codec="golomb")
    try:
        factory.pattern(result.chosen.density).apply(result.chosen.alpha)
    finally:
        factory.close()
    expected = compeft.load(dst)
    for name, tensor in expected.items():
        assert torch.equal(loaded.live[name], tensor), name


def test_model_is_loaded_once(catalog, monkeypatch):
    import compeft.calibrate.model as model_mod

    calls = []
    real = model_mod._from_pretrained
    monkeypatch.setattr(model_mod, "_from_pretrained", lambda *a, **k: calls.append(a) or real(*a, **k))
    fixture = catalog.adapter("lora-plus")
    result = calibrate(fixture.path, None, base=catalog.base_dir, task=str(fixture.task_yaml), densities=[0.3],
                       alphas=[1, 2, 4], device="cpu", limit=40)
    assert len(calls) == 1
    assert len(result.points) == 3 and result.dst is None and result.limit == 40


def test_full_fine_tune_residual_calibrates(catalog, tmp_path, score_model_dir):
    fixture = catalog.adapter("full-color")
    dst = tmp_path / "full"
    result = calibrate(fixture.path, dst, base=catalog.base_dir, task=str(fixture.task_yaml), densities=[0.1],
                       alphas=[1, 4], search="grid", device="cpu")
    by_alpha = {p.alpha: p.score for p in result.points}
    assert by_alpha[4.0] > by_alpha[1.0] + 0.2
    assert result.chosen.alpha == 4.0 and result.artifact.kind == "full"
    assert result.chosen.score >= result.reference.value - MARGIN["full-color", 0.1]
    restored = compeft.decompress(dst, tmp_path / "restored", base=catalog.base_dir, device="cpu")
    assert score_model_dir(restored, fixture.task_yaml).value == result.chosen.score


def test_cli_writes_artifact_and_reports(catalog, tmp_path, capsys):
    from compeft.calibrate.cli import calibrate_main

    fixture = catalog.adapter("lora-plus")
    dst = tmp_path / "cli"
    rc = calibrate_main([str(fixture.path), str(dst), "--base", str(catalog.base_dir), "--task", str(fixture.task_yaml),
                         "--densities", "0.3", "--limit", "60", "--tolerance", "0.05",
                         "--device", "cpu", "--batch-size", "32", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    doc = json.loads((dst / "calibration.json").read_text())
    assert summary["alpha"] == doc["chosen"]["alpha"] and summary["density"] == 0.3
    assert doc["search"] == "refine" and doc["tolerance"] == 0.05 and doc["limit"] == 60
    assert len(doc["points"]) < 9  # refine skipped some of the paper grid
    assert (dst / "compeft.safetensors").is_file() and (dst / "adapter_config.json").is_file()
    assert (dst / "calibration.png").is_file()


def test_cli_refuses_existing_destination_before_loading(catalog, tmp_path):
    from compeft.calibrate.cli import calibrate_main
    from compeft.errors import DestinationExistsError, OptionError

    fixture = catalog.adapter("lora-plus")
    (tmp_path / "taken").mkdir()
    with pytest.raises(DestinationExistsError):
        calibrate_main([str(fixture.path), str(tmp_path / "taken"), "--base", str(catalog.base_dir),
                        "--task", str(fixture.task_yaml)])
    with pytest.raises(OptionError):
        calibrate_main([str(fixture.path), str(tmp_path / "x"), "--base", str(catalog.base_dir),
                        "--task", str(fixture.task_yaml), "--densities", "0,2"])
    with pytest.raises(OptionError):
        calibrate_main([str(fixture.path)])


def test_evaluations_are_reproducible_and_see_in_place_updates(catalog):
    from compeft.calibrate.evaluator import LmEvalEvaluator
    from compeft.calibrate.model import load_model
    from compeft.calibrate.tasks import resolve_task

    fixture = catalog.adapter("lora-plus")
    loaded = load_model(fixture.path, str(catalog.base_dir), torch.device("cpu"))
    ev = LmEvalEvaluator(resolve_task(str(fixture.task_yaml)), loaded.tokenizer, limit=40)
    first, second = ev.evaluate(loaded.model), ev.evaluate(loaded.model)
    assert (first.value, first.stderr, first.n) == (second.value, second.stderr, second.n) and first.n == 40
    with torch.no_grad():  # switch the adapter off in place: the next evaluation must see it (no result cache)
        for name, t in loaded.live.items():
            if "lora_B" in name:
                t.zero_()
    assert ev.evaluate(loaded.model).value <= first.value - 0.3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_sweep_matches_cpu(catalog):
    fixture = catalog.adapter("ia3-next")
    kw = {"base": catalog.base_dir, "task": str(fixture.task_yaml), "densities": [0.1], "alphas": [1, 4], "search": "grid"}
    gpu = calibrate(fixture.path, None, device="cuda", **kw)
    cpu = calibrate(fixture.path, None, device="cpu", **kw)
    assert gpu.device.startswith("cuda")
    for g, c in zip(gpu.points, cpu.points):
        assert abs(g.score - c.score) <= 0.02 and g.bytes == c.bytes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_update_equals_the_artifact_weights(catalog, tmp_path, dtype):
    """The no-θ_init path (LoRA: patterns in the target dtype, fused scale) writes what loading the artifact
    gives, for float32 and bfloat16 adapters (a bf16 artifact's values rounded to bf16 even where the model
    holds the adapter in float32)."""
    from safetensors.torch import load_file, save_file

    from compeft.calibrate.model import load_model
    from compeft.calibrate.patterns import PatternFactory

    src = tmp_path / "lora"
    src.mkdir()
    fixture = catalog.adapter("lora-plus")
    (src / "adapter_config.json").write_bytes((fixture.path / "adapter_config.json").read_bytes())
    tensors = {k: v.to(dtype) for k, v in load_file(str(fixture.path / "adapter_model.safetensors")).items()}
    save_file(tensors, str(src / "adapter_model.safetensors"))
    compeft.compress(src, tmp_path / "art", density=0.1, alpha=3.0, device="cpu")
    loaded = load_model(src, str(catalog.base_dir), torch.device("cpu"))
    factory = PatternFactory(src, loaded, base_dir=None, codec="golomb")
    try:
        factory.pattern(0.1).apply(3.0)
    finally:
        factory.close()
    for name, tensor in compeft.load(tmp_path / "art").items():
        live = loaded.live[name]  # PEFT holds a bf16 adapter in float32 on a float32 base
        assert tensor.dtype == dtype and torch.equal(live, tensor.to(live.dtype)), name
