"""apply_residual / revert_residual (issue 17): a full fine-tune residual added in place to a resident base equals
the decompressed fine-tune bit for bit, and revert restores the base bit for bit (CPU here; CUDA when present)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_fullmodel_stream import write_model

import compeft
from compeft.errors import InputError
from compeft.serving import ResidentResidual, apply_residual, revert_residual

ROOT = Path(__file__).resolve().parents[2]
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                                 reason="needs CUDA")])]


def read_dir(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                      b.reshape(-1).view(torch.uint8))


@pytest.fixture(scope="module")
def residual_case(tmp_path_factory):
    """A base with bf16, fp16 and float32 tensors (one holding −0.0), a fine-tune, the artifact and the decompressed
    fine-tune."""
    root = tmp_path_factory.mktemp("residual")
    gen = torch.Generator().manual_seed(3)
    base, ft = {}, {}
    for i, (shape, dtype) in enumerate([((300, 200), torch.bfloat16), ((64, 64), torch.float16), ((200,), torch.float32),
                                        ((1100, 1000), torch.bfloat16), ((50, 30), torch.float32)]):
        b = torch.randn(shape, generator=gen) * 0.02
        b.view(-1)[:16] = -0.0
        f = b + torch.randn(shape, generator=gen) * 0.003
        base[f"w{i}"], ft[f"w{i}"] = b.to(dtype), f.to(dtype)
    ft_dir, base_dir = write_model(root / "ft", ft, 2), write_model(root / "base", base, 2)
    compeft.compress(ft_dir, root / "art", base=base_dir, density=0.2, alpha=1.3, device="cpu")
    out = compeft.decompress(root / "art", root / "model", base=base_dir, device="cpu")
    return root / "art", read_dir(base_dir), read_dir(out)


class Holder(torch.nn.Module):
    """A module whose parameters carry the tensors' names (as a transformers model's state dict does)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for name, t in tensors.items():
            self.register_parameter(name, torch.nn.Parameter(t.clone(), requires_grad=False))


@pytest.mark.parametrize("device", DEVICES)
def test_apply_equals_the_decompressed_fine_tune_and_revert_restores_the_base(residual_case, device):
    art, base, finetuned = residual_case
    model = Holder({k: v.to(device) for k, v in base.items()})
    applied = apply_residual(model, art)
    assert applied.pristine is not None
    state = dict(model.named_parameters())
    for name, expected in finetuned.items():
        assert bitwise(state[name].detach().cpu(), expected), name
    untouched_negative_zeros = 0
    for name, b in base.items():  # a −0.0 of the base is ±s where kept, else still −0.0 (θ + s·0 keeps θ's bits)
        negative_zero = (b == 0) & b.signbit()
        got = finetuned[name][negative_zero]
        assert bool(((got != 0) | got.signbit()).all()), name
        untouched_negative_zeros += int((got == 0).sum())
    assert untouched_negative_zeros > 0, "the fixture has no untouched −0.0"
    revert_residual(model, art)
    for name, expected in base.items():
        assert bitwise(state[name].detach().cpu(), expected), name


def test_a_resident_residual_applies_many_times(residual_case):
    """One checked residual applied, reverted and applied again: the same bits each time."""
    art, base, finetuned = residual_case
    resident = ResidentResidual(art)
    model = Holder(base)
    for _ in range(2):
        apply_residual(model, resident)
        assert all(bitwise(p.detach(), finetuned[n]) for n, p in model.named_parameters())
        revert_residual(model, resident)
        assert all(bitwise(p.detach(), base[n]) for n, p in model.named_parameters())


def test_revert_without_a_pristine_copy_subtracts(residual_case):
    """pristine=False keeps no values; revert subtracts s·t (exact only where the sum was: close to the base; a
    kept −0.0 comes back as +0.0) and leaves the untouched −0.0s as they were."""
    art, base, finetuned = residual_case
    model = Holder(base)
    applied = apply_residual(model, art, pristine=False)
    assert applied.pristine is None
    revert_residual(model, art)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach().float(), base[name].float(), rtol=0, atol=1e-2)
        untouched = (base[name] == 0) & base[name].signbit() & (finetuned[name] == 0)
        assert bool(untouched.any()) and bool(((p == 0) & p.signbit())[untouched].all()), name


def run_inplace_check(tmp_path: Path, device: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests" / "core"),
                                                                      os.environ.get("PYTHONPATH")]))}
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    run = subprocess.run([sys.executable, "-m", "tests.core.residual_inplace_check", str(tmp_path), device], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout[-2000:] + run.stderr[-4000:]


def test_in_place_path_under_the_triton_interpreter(tmp_path):
    """The CUDA path (the decoder adding s·t into the weights) run by Triton's CPU interpreter: apply equals the
    decompressed fine-tune and revert the base bit for bit (pristine kept or not, mode-1 chunks, −0.0s), and
    pristine=False gives the dense path's bits."""
    pytest.importorskip("triton")
    run_inplace_check(tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_in_place_path_on_cuda(tmp_path):
    run_inplace_check(tmp_path, "cuda")


def test_wrong_model_and_wrong_order_are_refused(residual_case, tmp_path):
    """A model lacking a tensor, or with another dtype, is refused before anything changes; only the last applied
    residual can be reverted; an adapter artifact is not a residual."""
    art, base, _ = residual_case
    missing = Holder({k: v for k, v in base.items() if k != "w1"})
    with pytest.raises(InputError, match="w1"):
        apply_residual(missing, art)
    wrong = Holder({k: v.float() for k, v in base.items()})
    with pytest.raises(InputError, match="dtype|float32|bfloat16"):
        apply_residual(wrong, art)
    assert all(bitwise(p.detach(), base[n].float()) for n, p in wrong.named_parameters())
    model = Holder(base)
    with pytest.raises(InputError, match="no residual"):
        revert_residual(model, art)
    apply_residual(model, art)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(InputError):
        revert_residual(model, other / "compeft.safetensors")
    revert_residual(model, art)
    assert all(bitwise(p.detach(), base[n]) for n, p in model.named_parameters())
