"""BaseModelSession: one base load for many adapters, the same results as separate calibrations, and a
base left bit-identical after every adapter (also after one that fails mid-way)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import compeft.calibrate.model as model_mod
from compeft.calibrate import BaseModelSession, calibrate
from compeft.calibrate.evaluator import Score
from compeft.errors import CalibrationError, OptionError

ADAPTERS = ("lora-plus", "ia3-next")  # a LoRA on the MLP and an (IA)³ on attention/MLP: different PEFT layers
GRID = {"densities": [0.1], "alphas": [1, 4], "search": "grid", "limit": 40, "device": "cpu"}


class ProbeEvaluator:
    """A fast stand-in for lm-eval: mean logit on fixed tokens; raises on evaluation number ``fail_at``."""

    metric = "probe"

    def __init__(self, fail_at: int | None = None, write_base: bool = False) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.write_base = write_base

    def evaluate(self, model) -> Score:
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise CalibrationError("probe evaluation failed on purpose")
        if self.write_base:  # an adapter that writes into the shared base (in place)
            with torch.no_grad():
                model.get_input_embeddings().weight.add_(1.0)
        with torch.inference_mode():
            logits = model(torch.arange(4, 20).reshape(2, 8)).logits
        return Score(float(logits.float().mean()), None, 16, 0.0)


def count_loads(monkeypatch) -> list[str]:
    """Record every model directory _from_pretrained loads."""
    loads: list[str] = []
    real = model_mod._from_pretrained
    monkeypatch.setattr(model_mod, "_from_pretrained", lambda path, device: loads.append(path) or real(path, device))
    return loads


def snapshot(model) -> dict[str, bytes]:
    """Every parameter and buffer as raw bytes (bit-exact comparison, -0.0 and NaN included)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {name: t.detach().contiguous().view(torch.uint8).numpy().tobytes() for name, t in named}


def assert_pristine(session: BaseModelSession, before: dict[str, bytes]) -> None:
    model = session.loaded_base().model
    assert model_mod.peft_layers(model) == () and not hasattr(model, "peft_config")
    assert all(p.requires_grad for p in model.parameters())  # as from_pretrained left it
    assert snapshot(model) == before


def comparable(doc: dict) -> dict:
    """calibration.json without timings, paths and seconds (the rest must match exactly)."""
    doc = {k: v for k, v in doc.items() if k not in ("timings", "dst")}
    doc["artifact"] = {k: v for k, v in doc["artifact"].items() if k != "path" and "seconds" not in k}
    doc["points"] = [{k: v for k, v in p.items() if k != "seconds"} for p in doc["points"]]
    doc["reference"] = {k: v for k, v in doc["reference"].items() if k != "seconds"}
    doc["chosen"] = {k: v for k, v in doc["chosen"].items() if k != "seconds"}
    return doc


@pytest.fixture(scope="module")
def runs(catalog, tmp_path_factory):
    """Both adapters calibrated separately, then through one session (counting base loads there)."""
    root = tmp_path_factory.mktemp("session")
    for name in ADAPTERS:
        fixture = catalog.adapter(name)
        calibrate(fixture.path, root / "separate" / name, base=catalog.base_dir, task=str(fixture.task_yaml), **GRID)
    with pytest.MonkeyPatch.context() as mp, BaseModelSession(catalog.base_dir, "cpu") as session:
        loads = count_loads(mp)
        for name in ADAPTERS:
            fixture = catalog.adapter(name)
            calibrate(fixture.path, session=session, dst=root / "shared" / name, task=str(fixture.task_yaml), **GRID)
        session_loads = session.loads
    return root, loads, session_loads


def test_session_results_equal_separate_calibrations(runs):
    root, _, _ = runs
    for name in ADAPTERS:
        separate, shared = root / "separate" / name, root / "shared" / name
        sep_doc = json.loads((separate / "calibration.json").read_text())
        shared_doc = json.loads((shared / "calibration.json").read_text())
        assert comparable(shared_doc) == comparable(sep_doc), name
        assert len(sep_doc["points"]) == 2
        files = sorted(p.name for p in separate.iterdir() if not p.name.startswith("calibration."))
        assert "compeft.safetensors" in files and files == sorted(
            p.name for p in shared.iterdir() if not p.name.startswith("calibration."))
        for f in files:
            assert (shared / f).read_bytes() == (separate / f).read_bytes(), f"{name}/{f}"


def test_base_is_loaded_once_for_the_batch(runs, catalog):
    _, loads, session_loads = runs
    assert loads == [str(catalog.base_dir.resolve())] and session_loads == 1


def test_base_is_bit_identical_after_each_adapter(catalog):
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        before = snapshot(session.loaded_base().model)
        for name in ADAPTERS:
            fixture = catalog.adapter(name)
            calibrate(fixture.path, session=session, dst=None, task="probe", evaluator=ProbeEvaluator(), densities=[0.1],
                              alphas=[1, 4], search="grid")
            assert_pristine(session, before)
        assert session.loads == 1


def test_adapter_failing_mid_sweep_leaves_the_base_pristine(catalog):
    fixture = catalog.adapter("lora-plus")
    kw = {"task": "probe", "densities": [0.1], "alphas": [1, 4], "search": "grid"}
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        before = snapshot(session.loaded_base().model)
        clean = calibrate(fixture.path, session=session, dst=None, evaluator=ProbeEvaluator(), **kw)
        failing = ProbeEvaluator(fail_at=3)  # reference and α = 1 ran (adapter weights rewritten), then it fails
        with pytest.raises(CalibrationError, match="on purpose"):
            calibrate(fixture.path, session=session, dst=None, evaluator=failing, **kw)
        assert failing.calls == 3
        assert_pristine(session, before)
        again = calibrate(fixture.path, session=session, dst=None, evaluator=ProbeEvaluator(), **kw)
        assert [p.score for p in again.points] == [p.score for p in clean.points]
        assert again.reference.value == clean.reference.value and session.loads == 1


def test_adapter_failing_to_attach_leaves_the_base_pristine(catalog, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(catalog.adapter("lora-plus").path, broken)
    tensors = load_file(broken / "adapter_model.safetensors")
    last = sorted(tensors)[-1]  # a later module: earlier ones are already injected when loading fails
    tensors[last] = torch.zeros(tensors[last].shape[0] + 1, tensors[last].shape[1])
    save_file(tensors, broken / "adapter_model.safetensors")
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        before = snapshot(session.loaded_base().model)
        with pytest.raises(CalibrationError, match="could not attach the adapter"):
            calibrate(broken, session=session, dst=None, task="probe", evaluator=ProbeEvaluator(), densities=[0.1], alphas=[1])
        assert_pristine(session, before)
        assert session.loads == 1


def test_a_base_written_by_an_adapter_is_loaded_again(catalog):
    fixture = catalog.adapter("ia3-next")
    kw = {"task": "probe", "densities": [0.1], "alphas": [1], "search": "grid"}
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        before = snapshot(session.loaded_base().model)
        calibrate(fixture.path, session=session, dst=None, evaluator=ProbeEvaluator(write_base=True), **kw)
        assert not session.loaded  # the spoiled base was dropped
        calibrate(fixture.path, session=session, dst=None, evaluator=ProbeEvaluator(), **kw)
        assert session.loads == 2
        assert_pristine(session, before)


def test_full_fine_tune_bypasses_the_session_base(catalog, monkeypatch):
    fixture = catalog.adapter("full-color")
    loads = count_loads(monkeypatch)
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        result = calibrate(fixture.path, session=session, dst=None, task="probe", evaluator=ProbeEvaluator(), densities=[0.1],
                                   alphas=[1, 4], search="grid")
        assert not session.loaded and session.loads == 0
    assert loads == [str(fixture.path)] and result.artifact is None and len(result.points) == 2


def test_session_must_hold_the_named_base_and_device(catalog, tmp_path, monkeypatch):
    loads = count_loads(monkeypatch)
    fixture = catalog.adapter("lora-plus")
    other = tmp_path / "other-base"
    other.mkdir()
    with BaseModelSession(catalog.base_dir, "cpu") as session:
        with pytest.raises(OptionError, match="session's base"):
            calibrate(fixture.path, None, base=other, task="probe", evaluator=ProbeEvaluator(), session=session)
        if torch.cuda.is_available():
            with pytest.raises(OptionError, match="session's device"):
                calibrate(fixture.path, session=session, dst=None, task="probe", evaluator=ProbeEvaluator(), device="cuda")
    assert loads == []


def test_close_frees_the_base_model(catalog):
    import gc
    import weakref

    fixture = catalog.adapter("lora-plus")
    session = BaseModelSession(catalog.base_dir, "cpu")
    ref = weakref.ref(session.loaded_base().model)
    calibrate(fixture.path, session=session, dst=None, task="probe", evaluator=ProbeEvaluator(), densities=[0.1], alphas=[1])
    session.close()
    gc.collect()
    assert ref() is None and not session.loaded
