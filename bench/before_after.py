"""Reference (per-chunk, straight from the spec) vs fast paths, same inputs, same machine.

    python -m bench.before_after [--cpu-threads 2]
CPU on a 40M-parameter slice of the 7B shape (the first 8 layers; the reference coder is slow), GPU on
the whole 7B and 65B shapes. Prints a Markdown table; every fast output is checked equal to the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.synth import SHAPES, Shape, lora_tensors
from compeft import sparsify as sp
from compeft.codecs import get_codec
from compeft.taskvector import build_task_vector


def clock(fn, device, repeats):
    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def reference_ternarize(tau, density):
    m = sp.kept_count(density, tau.numel())
    mom = sp.Moments()
    mom.add(tau)
    bits = sp.magnitude_bits(tau)
    t_bits = sp.threshold_bits(bits, m)
    return sp.ternary_from_bits(tau, bits, t_bits), mom.std()


def rows_for(shape: Shape, device: torch.device, density: float, repeats: int):
    codec = get_codec("golomb")
    tensors = lora_tensors(shape, seed=0, device=device)
    tv = build_task_vector(tensors, device)
    segs = [r.numel for r in tv.records]
    out = []
    t_ref, (signs_ref, sigma_ref) = clock(lambda: reference_ternarize(tv.tau, density), device, 1)
    t_fast, tern = clock(lambda: sp.ternarize(tv.tau, density), device, repeats)
    ok = torch.equal(tern.signs, signs_ref) and abs(tern.sigma - sigma_ref) <= 1e-12 * abs(sigma_ref)
    out.append(("σ + threshold + signs", t_ref, t_fast, ok))
    t_ref, p_ref = clock(lambda: codec.encode_reference(tern.signs, segs), device, 1)
    t_fast, p_fast = clock(lambda: codec.encode(tern.signs, segs), device, repeats)
    out.append(("golomb encode", t_ref, t_fast, torch.equal(p_ref, p_fast)))
    d = tern.signs.numel()
    t_ref, s_ref = clock(lambda: codec.decode_reference(p_ref, d, device), device, 1)
    t_fast, s_fast = clock(lambda: codec.decode(p_ref, d, device), device, repeats)
    out.append(("golomb decode → int8 τ", t_ref, t_fast, torch.equal(s_ref, s_fast)))
    if device.type == "cuda":
        from compeft.codecs.golomb_fast import decode_fast

        t_torch, s_torch = clock(lambda: decode_fast(p_ref, d, device, backend="torch"), device, repeats)
        out.append(("  (decode, torch-ops backend)", t_ref, t_torch, torch.equal(s_ref, s_torch)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.1)
    args = parser.parse_args()
    lines = ["| device | shape | step | reference | fast | speed-up | equal |", "|---|---|---|---|---|---|---|"]
    torch.set_num_threads(args.cpu_threads)
    cpu_shape = Shape("7B, first 8 layers", 4096, 11008, 8)
    plan = [(torch.device("cpu"), cpu_shape, 2)]
    if torch.cuda.is_available():
        plan += [(torch.device("cuda"), SHAPES["7B"], 5), (torch.device("cuda"), SHAPES["65B"], 5)]
    for device, shape, repeats in plan:
        for step, ref, fast, ok in rows_for(shape, device, args.density, repeats):
            label = f"cpu ({args.cpu_threads} threads)" if device.type == "cpu" else "cuda"
            lines.append(f"| {label} | {shape.name} ({shape.params / 1e6:.0f}M) | {step} | {1e3 * ref:.1f} ms | {1e3 * fast:.1f} ms | {ref / fast:.1f}× | {ok} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
