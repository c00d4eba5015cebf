"""apply_residual's in-place path (Triton decoder adding s·t into the weights at the kept entries) under Triton's CPU
interpreter, against the decompressed fine-tune and the base, bit for bit (−0.0s included).

Executed in a subprocess by test_residual_serving.py (TRITON_INTERPRET=1 must be set before the kernels are
defined): ``python -m tests.core.residual_inplace_check DIR [cuda]`` (on CUDA without the interpreter). Exits
non-zero with a message on the first difference."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import compeft
from compeft.serving import ResidentResidual, apply_residual, revert_residual
from tests.core.test_fullmodel_stream import write_model
from tests.core.test_residual_serving import bitwise, read_dir


def case(root: Path, density: float) -> tuple[Path, dict, dict]:
    """(artifact, base, decompressed fine-tune): bf16, fp16 and float32 tensors, each holding −0.0s."""
    gen = torch.Generator().manual_seed(5)
    base, ft = {}, {}
    for i, (shape, dtype) in enumerate([((300, 200), torch.bfloat16), ((64, 64), torch.float16), ((200,), torch.float32),
                                        ((1100, 1000), torch.bfloat16), ((50, 30), torch.float32)]):
        b = torch.randn(shape, generator=gen) * 0.02
        b.view(-1)[:16] = -0.0
        b.view(-1)[-7:] = -0.0
        f = b + torch.randn(shape, generator=gen) * 0.003
        base[f"w{i}"], ft[f"w{i}"] = b.to(dtype), f.to(dtype)
    ft_dir, base_dir = write_model(root / "ft", ft, 2), write_model(root / "base", base, 2)
    compeft.compress(ft_dir, root / "art", base=base_dir, density=density, alpha=1.3, device="cpu")
    out = compeft.decompress(root / "art", root / "model", base=base_dir, device="cpu")
    return root / "art", read_dir(base_dir), read_dir(out)


def fail(message: str) -> None:
    sys.exit(message)


def same(weights: dict, expected: dict, what: str) -> None:
    for name, value in expected.items():
        if not bitwise(weights[name].cpu(), value.cpu()):
            fail(f"{what}: {name} differs")


def check(root: Path, density: float, device: str) -> None:
    art, base, finetuned = case(root, density)
    resident = ResidentResidual(art, device, in_place=True)
    if resident.inplace is None or not resident.fast:
        fail("the in-place path was not taken")
    if density > 0.5 and not resident.inplace.dense:
        fail("no mode-1 chunk at this density")
    weights = {k: v.to(device, copy=True) for k, v in base.items()}
    for _ in range(2):  # the second time with the addresses already planned
        applied = apply_residual(weights, resident)
        same(weights, finetuned, f"k={density}: apply")
        revert_residual(weights, applied)
        same(weights, base, f"k={density}: apply + revert")
    # pristine=False: identical to the dense path's apply and revert (neither touches an untouched −0.0)
    dense = ResidentResidual(art, device, in_place=False)
    if dense.inplace is not None:
        fail("the in-place path was taken unasked")
    if device == "cpu" and ResidentResidual(art, device).inplace is not None:
        fail("the CPU took the in-place path by default")
    other = {k: v.to(device, copy=True) for k, v in base.items()}
    a, b = apply_residual(weights, resident, pristine=False), apply_residual(other, dense, pristine=False)
    same(weights, finetuned, f"k={density}: apply without pristine")
    same(other, finetuned, f"k={density}: dense apply without pristine")
    revert_residual(weights, a)
    revert_residual(other, b)
    same(weights, other, f"k={density}: revert without pristine (in place vs dense)")
    for name, value in base.items():  # untouched −0.0s stay (a kept one comes back as +0.0 from ±s ∓ s)
        untouched = (value == 0) & value.signbit() & (finetuned[name] == 0)
        got = weights[name].cpu()
        if not bool(untouched.any()) or not bool(((got == 0) & got.signbit())[untouched].all()):
            fail(f"k={density}: revert without pristine lost an untouched −0.0 of {name}")


if __name__ == "__main__":
    device = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1 (or pass cuda)")
    root = Path(sys.argv[1])
    check(root / "k02", 0.2, device)
    check(root / "k07", 0.7, device)
    print("ok")
